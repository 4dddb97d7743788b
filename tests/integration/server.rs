//! Health, reflection, shutdown and database outages.

use std::time::Duration;

use assignment_service::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::*;
use crate::proxy::DatabaseProxy;

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let app = TestApp::start().await;
    for service in [
        "",
        "assignment.v1.AssignmentService",
        "assignment.v1.AccessGroupService",
        "assignment.v1.DirectoryService",
    ] {
        assert_eq!(
            app.health(service).await.unwrap(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    use tokio_stream::StreamExt;
    let app = TestApp::start().await;
    let channel = app.channel().await;

    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        channel.clone(),
    );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = v1
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.next().await.unwrap().unwrap();
    let Some(
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
            list,
        ),
    ) = reply.message_response
    else {
        panic!("unexpected reflection reply");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "assignment.v1.AssignmentService",
        "assignment.v1.AccessGroupService",
        "assignment.v1.DirectoryService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut v1alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            channel,
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "assignment.v1.AssignmentService".into(),
            ),
        ),
    };
    let mut stream = v1alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.next().await.unwrap().unwrap();
    assert!(matches!(
        reply.message_response,
        Some(tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

/// Reflection answers what it does not know in the stream (an ErrorResponse, NOT_FOUND) and goes on
/// answering, as grpc-go does, in both versions of the protocol.
#[tokio::test]
async fn reflection_answers_unknown_symbols_in_the_stream_and_goes_on() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Request;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Response;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let app = TestApp::start().await;
    let channel = app.channel().await;

    let requests = [
        V1Request::FileContainingSymbol("assignment.v1.NoSuchService".into()),
        V1Request::FileByFilename("no/such.proto".into()),
        V1Request::FileContainingSymbol("assignment.v1.AssignmentService".into()),
        V1Request::ListServices(String::new()),
    ]
    .map(
        |request| tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        },
    );
    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        channel.clone(),
    );
    let mut stream = v1
        .server_reflection_info(tokio_stream::iter(requests.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    while let Some(reply) = stream.message().await.expect("the stream is not ended") {
        answers.push(reply);
    }
    assert_eq!(answers.len(), 4, "every request answered: {answers:?}");
    for (answer, request) in answers.iter().zip(&requests) {
        assert_eq!(answer.original_request.as_ref(), Some(request));
    }
    for unknown in &answers[..2] {
        let Some(V1Response::ErrorResponse(error)) = &unknown.message_response else {
            panic!("an ErrorResponse: {unknown:?}");
        };
        assert_eq!(error.error_code, Code::NotFound as i32, "{error:?}");
        assert!(!error.error_message.is_empty());
    }
    assert!(matches!(
        answers[2].message_response,
        Some(V1Response::FileDescriptorResponse(_))
    ));
    assert!(matches!(
        answers[3].message_response,
        Some(V1Response::ListServicesResponse(_))
    ));

    let requests = [
        AlphaRequest::FileContainingSymbol("NoSuchSymbol".into()),
        AlphaRequest::ListServices(String::new()),
    ]
    .map(
        |request| tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        },
    );
    let mut v1alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            channel,
        );
    let mut stream = v1alpha
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("an answer");
    let Some(AlphaResponse::ErrorResponse(error)) = first.message_response else {
        panic!("an ErrorResponse: {first:?}");
    };
    assert_eq!(error.error_code, Code::NotFound as i32);
    let second = stream.message().await.unwrap().expect("a second answer");
    assert!(matches!(
        second.message_response,
        Some(AlphaResponse::ListServicesResponse(_))
    ));
    assert!(stream.message().await.unwrap().is_none());
}

#[tokio::test]
async fn an_unreachable_database_is_not_serving_and_calls_are_unavailable() {
    let proxy = DatabaseProxy::start(&fresh_schema_url().await).await;
    let app = TestApp::start_with(&config(&proxy.url, &["--health-check-interval", "50ms"])).await;
    app.admin("admin").await;
    assert_eq!(app.health("").await.unwrap(), ServingStatus::Serving);

    proxy.cut();
    assert_eq!(
        health_becomes(&app, ServingStatus::NotServing).await,
        ServingStatus::NotServing
    );
    assert_eq!(
        app.health("assignment.v1.AssignmentService").await.unwrap(),
        ServingStatus::NotServing
    );

    let result = app
        .assignments()
        .await
        .get_conversation(as_actor(
            "admin",
            pb::GetConversationRequest {
                conversation_id: "c1".into(),
            },
        ))
        .await;
    let status = expect_code(result, Code::Unavailable);
    assert_eq!(reason(&status), "DATABASE_UNAVAILABLE");
}

#[tokio::test]
async fn shutdown_drains_and_stops_serving() {
    let app = TestApp::start().await;
    app.admin("admin").await;
    let addr = app.addr;
    app.stop().await;
    let endpoint = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap();
    assert!(
        endpoint.connect().await.is_err(),
        "the listener is closed after shutdown"
    );
}

/// Health's answer once it is `wanted` (polled for 20 s at least: an unanswered check gives up after 2 s
/// on its connection, then 5 s on a new one).
async fn health_becomes(app: &TestApp, wanted: ServingStatus) -> ServingStatus {
    let mut status = app.health("").await.unwrap();
    for _ in 0..1000 {
        if status == wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = app.health("").await.unwrap();
    }
    status
}

fn get_conversation(deadline: Duration) -> tonic::Request<pb::GetConversationRequest> {
    let mut request = as_actor(
        "admin",
        pb::GetConversationRequest {
            conversation_id: "c1".into(),
        },
    );
    request.set_timeout(deadline);
    request
}

/// A password the messages must never show (the test cluster trusts every connection, so it is ignored).
const PASSWORD: &str = "pw-never-shown";

#[tokio::test]
async fn during_an_outage_calls_fail_at_once_naming_the_database_and_flow_again_after_it() {
    let proxy = DatabaseProxy::start(&fresh_schema_url().await).await;
    let url = proxy.url.replacen("@", &format!(":{PASSWORD}@"), 1);
    assert!(url.contains(PASSWORD), "{url}");
    let app = TestApp::start_with(&config(&url, &["--health-check-interval", "50ms"])).await;
    app.admin("admin").await;
    app.conversation("c1", &[]).await;

    proxy.cut();
    assert_eq!(
        health_becomes(&app, ServingStatus::NotServing).await,
        ServingStatus::NotServing
    );
    // A deadline shorter than the pool's acquire timeout (5 s): only an answer that does not wait for
    // the pool is in time.
    let mut client = app.assignments().await;
    for _ in 0..3 {
        let result = client
            .get_conversation(get_conversation(Duration::from_secs(2)))
            .await;
        let status = expect_code(result, Code::Unavailable);
        assert_eq!(reason(&status), "DATABASE_UNAVAILABLE");
        assert!(
            status.message().contains("unreachable")
                && status.message().contains(&proxy.addr.to_string()),
            "says the database is unreachable, and where: {status:?}"
        );
        assert!(!status.message().contains(PASSWORD), "{status:?}");
    }
    let write = client
        .assign_conversation(as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "c1".into(),
                assignee_id: "admin".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&expect_code(write, Code::Unavailable)),
        "DATABASE_UNAVAILABLE"
    );

    proxy.restore();
    assert_eq!(
        health_becomes(&app, ServingStatus::Serving).await,
        ServingStatus::Serving
    );
    // Connections made before the outage are not handed to calls: the first call after it answers.
    let conversation = client
        .get_conversation(get_conversation(Duration::from_secs(10)))
        .await
        .expect("calls flow again once the database answers")
        .into_inner();
    assert_eq!(conversation.conversation.unwrap().conversation_id, "c1");
}

#[tokio::test]
async fn an_unreachable_database_at_start_up_is_named_with_the_error() {
    // A port nothing listens on.
    let port = free_port();
    let url = format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/assign");
    let message = match assignment_service::app::build(&config(&url, &[])).await {
        Ok(_) => panic!("started without a database"),
        Err(message) => message,
    };
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "names the address: {message}"
    );
    assert!(
        message.to_lowercase().contains("refused"),
        "gives the underlying error: {message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test]
async fn a_calls_database_error_is_logged_once() {
    let proxy = DatabaseProxy::start(&fresh_schema_url().await).await;
    let addr = format!("127.0.0.1:{}", free_port());
    // Health checks only at start, so the call meets the broken pool rather than a known outage.
    let (mut child, channel) =
        spawn_binary_on(&proxy.url, &addr, &["--health-check-interval", "1h"], &[]).await;
    let mut directory =
        assignment_service::pb::directory_service_client::DirectoryServiceClient::new(
            channel.clone(),
        );
    directory
        .upsert_user(system(
            CAMPAIGN,
            pb::UpsertUserRequest {
                user_id: "admin".into(),
                role: pb::Role::Admin.into(),
                display_name: String::new(),
            },
        ))
        .await
        .unwrap();

    proxy.cut();
    let mut request = get_conversation(Duration::from_secs(30));
    request
        .metadata_mut()
        .insert("x-request-id", "log-once-1".parse().unwrap());
    let result =
        assignment_service::pb::assignment_service_client::AssignmentServiceClient::new(channel)
            .get_conversation(request)
            .await;
    assert_eq!(
        reason(&expect_code(result, Code::Unavailable)),
        "DATABASE_UNAVAILABLE"
    );

    // SAFETY: signalling our own child by pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    for _ in 0..500 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("log-once-1"))
        .collect();
    assert_eq!(lines.len(), 1, "one line for the failed call:\n{log}");
    assert!(
        lines[0].contains("call failed") && lines[0].contains("\"error\""),
        "the line carries the database error: {}",
        lines[0]
    );
}
