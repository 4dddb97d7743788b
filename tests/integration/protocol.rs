//! Requests that are not valid protobuf, sent as raw gRPC frames: INVALID_ARGUMENT, and nothing written.

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
