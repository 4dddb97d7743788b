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
    let mut status = ServingStatus::Serving;
    for _ in 0..100 {
        status = app.health("assignment.v1.AssignmentService").await.unwrap();
        if status == ServingStatus::NotServing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, ServingStatus::NotServing);
    assert_eq!(app.health("").await.unwrap(), ServingStatus::NotServing);

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
