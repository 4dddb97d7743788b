//! OpenTelemetry: the real binary, with the standard OTEL_* variables, exports a call's spans to an OTLP
//! collector, continuing the caller's trace, and logs the trace id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::harness::*;

/// An in-process OTLP trace collector keeping every span it receives.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn with_traceparent<T>(mut request: tonic::Request<T>) -> tonic::Request<T> {
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    request
}

#[tokio::test]
async fn a_call_continues_the_callers_trace_with_nested_batch_and_transaction_spans() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let envs = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ];
    let (mut child, client_channel) = spawn_binary(&addr, &[], &envs).await;
    let mut client = AssignmentServiceClient::new(client_channel.clone());

    let trigger = pb::AutoAssignConversationRequest {
        priority: Default::default(),
        conversation_id: "c1".into(),
        trigger_id: "t1".into(),
        member_id: "m1".into(),
        member_tags: vec![],
    };
    client
        .auto_assign_conversation(with_traceparent(system(CAMPAIGN, trigger)))
        .await
        .expect("auto-assign");
    // A manual assignment: its transaction records how long it waited for the conversation's lock.
    let mut directory =
        assignment_service::pb::directory_service_client::DirectoryServiceClient::new(
            client_channel.clone(),
        );
    for (user_id, role) in [("admin", pb::Role::Admin), ("org1", pb::Role::Organizer)] {
        directory
            .upsert_user(system(
                CAMPAIGN,
                pb::UpsertUserRequest {
                    user_id: user_id.into(),
                    role: role.into(),
                    display_name: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    client
        .assign_conversation(with_traceparent(as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "c1".into(),
                assignee_id: "org1".into(),
                expected_version: None,
            },
        )))
        .await
        .expect("assign");
    // A refused call logs at info: its line carries the trace id.
    let refused = client
        .get_conversation(with_traceparent(as_actor(
            "nobody",
            pb::GetConversationRequest {
                conversation_id: "c1".into(),
            },
        )))
        .await;
    assert!(refused.is_err());

    let method = "/assignment.v1.AssignmentService/AutoAssignConversation";
    let mut spans = Vec::new();
    // Every span the assertions read, in the caller's trace (exported in batches, on a busy machine late).
    let wanted = [
        method,
        "auto_assign.batch",
        "/assignment.v1.AssignmentService/AssignConversation",
    ];
    for _ in 0..600 {
        spans = collector.0.lock().unwrap().clone();
        let ours: Vec<&str> = spans
            .iter()
            .filter(|s| s.trace_id == hex(TRACE_ID))
            .map(|s| s.name.as_str())
            .collect();
        let transactions = ours.iter().filter(|n| **n == "db.transaction").count();
        if wanted.iter().all(|name| ours.contains(name)) && transactions >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);

    let trace_id = hex(TRACE_ID);
    let ours: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let named = |name: &str| {
        ours.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name:?} in the caller's trace: {spans:#?}"))
    };
    let call = named(method);
    assert_eq!(
        call.parent_span_id,
        hex(PARENT_SPAN_ID),
        "continues the caller's span"
    );
    assert_eq!(attribute(call, "method").as_deref(), Some(method));
    assert_eq!(attribute(call, "campaign").as_deref(), Some(CAMPAIGN));
    assert_eq!(attribute(call, "code").as_deref(), Some("Ok"));
    let batch = named("auto_assign.batch");
    assert_eq!(
        batch.parent_span_id, call.span_id,
        "the batch runs under the call"
    );
    assert_eq!(attribute(batch, "size").as_deref(), Some("1"));
    let transaction = named("db.transaction");
    assert_eq!(transaction.parent_span_id, batch.span_id);
    assert!(
        attribute(transaction, "lock_wait_ms").is_some(),
        "the lock wait is recorded: {transaction:?}"
    );
    let assign = named("/assignment.v1.AssignmentService/AssignConversation");
    let assign_transaction = ours
        .iter()
        .find(|s| s.name == "db.transaction" && s.parent_span_id == assign.span_id)
        .expect("the assignment's transaction span");
    assert!(attribute(assign_transaction, "lock_wait_ms").is_some());
    assert_eq!(attribute(assign, "actor").as_deref(), Some("admin"));
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("call failed")).collect();
    assert!(
        !failed.is_empty() && failed.iter().all(|l| l.contains(TRACE_ID)),
        "log lines of the call carry its trace id:\n{log}"
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
