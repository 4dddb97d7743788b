//! Requests that are not valid protobuf, sent as raw gRPC frames: INVALID_ARGUMENT, and nothing written.
//! Requests that are not gRPC at all or not framed as gRPC, sent as raw HTTP/2 requests: refused before
//! any RPC reads them. Bulk messages over the size limit after the first.

use assignment_service::pb;
use http::uri::PathAndQuery;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::*;
use crate::raw_codec::RawCodec;

async fn raw_client(app: &TestApp) -> tonic::client::Grpc<tonic::transport::Channel> {
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    grpc.ready().await.expect("the channel is ready");
    grpc
}

async fn upsert_user_raw(app: &TestApp, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let path = PathAndQuery::from_static("/assignment.v1.DirectoryService/UpsertUser");
    raw_client(app)
        .await
        .unary(system(CAMPAIGN, body), path, RawCodec)
        .await
        .map(|reply| reply.into_inner())
}

/// A length-delimited protobuf field (`len` < 128), written by hand so it may hold anything.
fn bytes_field(number: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2, value.len() as u8];
    out.extend_from_slice(value);
    out
}

fn ana() -> pb::UpsertUserRequest {
    pb::UpsertUserRequest {
        user_id: "ana".into(),
        role: pb::Role::Admin.into(),
        display_name: "Ana".into(),
    }
}

#[tokio::test]
async fn a_unary_request_that_is_not_valid_protobuf_is_invalid_argument_and_writes_nothing() {
    let app = TestApp::start().await;

    // user_id (field 1) holds bytes that are not UTF-8; the other fields are fine.
    let mut not_utf8 = bytes_field(1, b"\xff\xfeana");
    not_utf8.extend(
        pb::UpsertUserRequest {
            user_id: String::new(),
            ..ana()
        }
        .encode_to_vec(),
    );
    let status = expect_code(upsert_user_raw(&app, not_utf8).await, Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("the request is not a valid UpsertUserRequest protobuf message"),
        "{status:?}"
    );
    assert!(status.message().contains("UTF-8"), "{status:?}");

    // display_name, the last field, cut short: its length says more bytes than follow.
    let mut truncated = ana().encode_to_vec();
    truncated.pop();
    let status = expect_code(
        upsert_user_raw(&app, truncated).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("UpsertUserRequest"), "{status:?}");
    assert_eq!(app.count("users").await, 0);

    // The same raw client with the whole message succeeds: it was the bytes that were refused.
    upsert_user_raw(&app, ana().encode_to_vec())
        .await
        .expect("a valid message");
    assert_eq!(app.count("users").await, 1);
}

/// Admin "admin", organizer "org1" and conversations c1 and c2.
async fn campaign() -> TestApp {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.organizer("org1").await;
    app.conversation("c1", &[]).await;
    app.conversation("c2", &[]).await;
    app
}

fn options_message() -> Vec<u8> {
    use pb::bulk_assign_request::Payload;
    pb::BulkAssignRequest {
        payload: Some(Payload::Options(pb::BulkAssignOptions {
            assignee_ids: vec!["admin".into()],
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

/// A BulkAssignRequest whose batch (field 2) holds "c2" and an id that is not UTF-8.
fn malformed_batch() -> Vec<u8> {
    let mut ids = bytes_field(1, b"c2");
    ids.extend(bytes_field(1, b"c\xff"));
    bytes_field(2, &ids)
}

fn batch_message(ids: &[&str]) -> Vec<u8> {
    use pb::bulk_assign_request::Payload;
    pb::BulkAssignRequest {
        payload: Some(Payload::Conversations(pb::ConversationBatch {
            conversation_ids: ids.iter().map(|id| id.to_string()).collect(),
        })),
    }
    .encode_to_vec()
}

/// The replies of a raw BulkAssign stream until it ends or fails.
async fn bulk_assign_raw(
    app: &TestApp,
    messages: Vec<Vec<u8>>,
) -> (Vec<pb::BulkAssignResponse>, Option<tonic::Status>) {
    let path = PathAndQuery::from_static("/assignment.v1.AssignmentService/BulkAssign");
    let request = as_actor("admin", tokio_stream::iter(messages));
    let mut replies = Vec::new();
    let mut stream = match raw_client(app)
        .await
        .streaming(request, path, RawCodec)
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return (replies, Some(status)),
    };
    while let Some(reply) = stream.next().await {
        match reply {
            Ok(bytes) => replies.push(pb::BulkAssignResponse::decode(&bytes[..]).unwrap()),
            Err(status) => return (replies, Some(status)),
        }
    }
    (replies, None)
}

async fn assigned(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM conversations WHERE assignee_id IS NOT NULL")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_bulk_message_that_is_not_valid_protobuf_ends_the_stream_with_invalid_argument() {
    let app = campaign().await;

    // As the first message, it fails the call before anything starts.
    let (replies, status) = bulk_assign_raw(&app, vec![malformed_batch()]).await;
    assert!(replies.is_empty());
    let status = expect_code(
        Err::<(), _>(status.expect("an error")),
        Code::InvalidArgument,
    );
    assert!(status.message().contains("BulkAssignRequest"), "{status:?}");

    // After the options, the client is told why the stream ended, and nothing of that batch was done.
    let (replies, status) = bulk_assign_raw(&app, vec![options_message(), malformed_batch()]).await;
    assert!(replies.is_empty(), "{replies:?}");
    let status = expect_code(
        Err::<(), _>(status.expect("an error")),
        Code::InvalidArgument,
    );
    assert!(status.message().contains("BulkAssignRequest"), "{status:?}");
    assert_eq!(assigned(&app).await, 0);
    assert_eq!(app.count("assignment_events").await, 0);

    // A batch before it stays done, and its results were sent before the error.
    let (replies, status) = bulk_assign_raw(
        &app,
        vec![options_message(), batch_message(&["c1"]), malformed_batch()],
    )
    .await;
    expect_code(
        Err::<(), _>(status.expect("an error")),
        Code::InvalidArgument,
    );
    let results: Vec<_> = replies
        .into_iter()
        .filter_map(|reply| match reply.payload {
            Some(pb::bulk_assign_response::Payload::Results(results)) => Some(results.items),
            _ => None,
        })
        .flatten()
        .map(|item| (item.outcome(), item.conversation_id))
        .collect();
    assert_eq!(
        results,
        vec![(pb::BulkItemOutcome::Assigned, "c1".to_string())]
    );
    assert_eq!(assigned(&app).await, 1);
    assert_eq!(app.stored("c2").await.0, None);
}

/// A later message over `--max-message-bytes` ends the stream with OUT_OF_RANGE, after the answers to every
/// message before it; what those answers say was done stays done.
#[tokio::test]
async fn a_later_bulk_message_over_the_size_limit_ends_the_stream_with_out_of_range() {
    let app = campaign().await;
    let oversized = batch_message(&["c".repeat(1_000).as_str(); 5_000]);
    assert!(oversized.len() > 4 * 1024 * 1024, "over the default limit");
    let (replies, status) = bulk_assign_raw(
        &app,
        vec![options_message(), batch_message(&["c1"]), oversized],
    )
    .await;
    let status = expect_code(
        Err::<(), _>(status.expect("the stream ends with an error, not OK")),
        Code::OutOfRange,
    );
    assert!(status.message().contains("too large"), "{status:?}");
    let results: Vec<_> = replies
        .iter()
        .filter_map(|reply| match &reply.payload {
            Some(pb::bulk_assign_response::Payload::Results(results)) => Some(&results.items),
            _ => None,
        })
        .flatten()
        .map(|item| (item.outcome(), item.conversation_id.as_str()))
        .collect();
    assert_eq!(results, vec![(pb::BulkItemOutcome::Assigned, "c1")]);
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("admin"));
    assert_eq!(assigned(&app).await, 1);
}

/// A raw HTTP/2 request to `path` with this content type and body (and extra headers); its answer's HTTP
/// status, its gRPC status (from the headers, or the trailers), once the whole answer is read.
async fn http_request(
    app: &TestApp,
    path: &str,
    content_type: &str,
    headers: &[(&'static str, &str)],
    body: Vec<u8>,
) -> (http::StatusCode, tonic::Status) {
    use http_body::Body as _;
    use tower::ServiceExt;
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{path}", app.addr))
        .header("content-type", content_type)
        .header("te", "trailers")
        .header("x-campaign-id", CAMPAIGN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(tonic::body::Body::new(one_chunk(body)))
        .unwrap();
    let response = app
        .channel()
        .await
        .oneshot(request)
        .await
        .expect("an answer");
    let http_status = response.status();
    let mut grpc_status = tonic::Status::from_header_map(response.headers());
    let mut body = response.into_body();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Ok(trailers) = frame.expect("the answer arrives").into_trailers() {
            grpc_status = grpc_status.or_else(|| tonic::Status::from_header_map(&trailers));
        }
    }
    (http_status, grpc_status.expect("a grpc-status"))
}

/// One chunk of bytes as a request body.
fn one_chunk(
    bytes: Vec<u8>,
) -> impl http_body::Body<Data = bytes::Bytes, Error = std::convert::Infallible> {
    struct Once(Option<bytes::Bytes>);
    impl http_body::Body for Once {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.take().map(|data| Ok(http_body::Frame::data(data))))
        }
    }
    Once(Some(bytes.into()))
}

/// `message` with gRPC's 5-byte prefix (not compressed).
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend((message.len() as u32).to_be_bytes());
    out.extend(message);
    out
}

const UPSERT_USER: &str = "/assignment.v1.DirectoryService/UpsertUser";

#[tokio::test]
async fn a_request_that_is_not_grpc_is_refused_with_http_415_and_writes_nothing() {
    let app = TestApp::start().await;
    let body = grpc_frame(&ana().encode_to_vec());
    for content_type in [
        "application/json",
        "text/plain",
        "application/grpc-web",
        "application/grpc+json",
    ] {
        let (http_status, status) =
            http_request(&app, UPSERT_USER, content_type, &[], body.clone()).await;
        assert_eq!(
            http_status,
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{content_type}: {status:?}"
        );
        assert_eq!(reason(&status), "UNSUPPORTED_CONTENT_TYPE");
        assert!(status.message().contains(content_type), "{status:?}");
    }
    // Health too is gRPC only.
    let (http_status, _) = http_request(
        &app,
        "/grpc.health.v1.Health/Check",
        "application/json",
        &[],
        grpc_frame(&[]),
    )
    .await;
    assert_eq!(http_status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(app.count("users").await, 0);

    // The same request as gRPC is served.
    for content_type in ["application/grpc", "application/grpc+proto; charset=utf-8"] {
        let (http_status, status) =
            http_request(&app, UPSERT_USER, content_type, &[], body.clone()).await;
        assert_eq!(http_status, http::StatusCode::OK);
        assert_eq!(status.code(), Code::Ok, "{content_type}: {status:?}");
    }
    assert_eq!(app.count("users").await, 1);
}

/// Framing tonic would answer INTERNAL (the client's mistake, yet "blame the server"): INVALID_ARGUMENT
/// (MALFORMED_FRAMING), and nothing written.
#[tokio::test]
async fn a_body_not_framed_as_grpc_is_invalid_argument_and_writes_nothing() {
    let app = TestApp::start().await;
    let whole = grpc_frame(&ana().encode_to_vec());
    let mut flagged = whole.clone();
    flagged[0] = 7;
    let bodies = [
        ("cut short", whole[..whole.len() - 2].to_vec()),
        ("only part of the prefix", whole[..3].to_vec()),
        ("compressed flag 7", flagged),
        ("no message", Vec::new()),
        ("two messages", [whole.clone(), whole.clone()].concat()),
    ];
    for (what, body) in bodies {
        let (_, status) = http_request(&app, UPSERT_USER, "application/grpc", &[], body).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(reason(&status), "MALFORMED_FRAMING", "{what}: {status:?}");
    }
    assert_eq!(app.count("users").await, 0);
    let (_, status) = http_request(&app, UPSERT_USER, "application/grpc", &[], whole).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert_eq!(app.count("users").await, 1);
}
