//! Connections: one that never speaks HTTP/2 is closed after the handshake timeout, and during the drain
//! at shutdown new connections still reach health (NOT_SERVING) while other calls are refused.

use std::net::SocketAddr;
use std::time::Duration;

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::harness::*;

/// Whether the server closes `connection` (end of stream or reset) within `within`.
pub async fn closed_within(mut connection: impl AsyncRead + Unpin, within: Duration) -> bool {
    let mut received = Vec::new();
    tokio::time::timeout(within, connection.read_to_end(&mut received))
        .await
        .is_ok()
}

#[tokio::test]
async fn connections_that_send_no_http2_preface_are_closed_after_the_handshake_timeout() {
    let app = TestApp::start_configured(&["--handshake-timeout", "300ms"]).await;
    let silent = TcpStream::connect(app.addr).await.unwrap();
    let mut partial = TcpStream::connect(app.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // Generous: the bound is the handshake timeout; without it they stay open for ever.
    assert!(
        closed_within(silent, Duration::from_secs(10)).await,
        "a silent connection is closed"
    );
    assert!(
        closed_within(partial, Duration::from_secs(10)).await,
        "a connection that trickles part of the preface is closed"
    );
    // HTTP/2 clients are served as before.
    app.health("").await.expect("a client that speaks HTTP/2");
}

/// Health over a new connection to `addr`.
async fn health_on_new_connection(addr: SocketAddr) -> Result<ServingStatus, String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("no connection: {e}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|reply| reply.into_inner().status())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn during_the_drain_health_answers_not_serving_on_new_connections_and_calls_are_refused() {
    let app = TestApp::start_configured(&["--drain-timeout", "30s"]).await;
    app.admin("admin").await;
    app.conversation("c1", &[]).await;
    let addr = app.addr;
    // A bulk stream still running keeps the server draining.
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::BulkAssignRequest {
        payload: Some(pb::bulk_assign_request::Payload::Options(
            pb::BulkAssignOptions {
                assignee_ids: vec!["admin".into()],
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = app
        .assignments()
        .await
        .bulk_assign(as_actor("admin", ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let stopped = tokio::spawn(app.stop());

    let mut status = ServingStatus::Serving;
    for _ in 0..250 {
        status = health_on_new_connection(addr)
            .await
            .unwrap_or_else(|e| panic!("health is unreachable during the drain: {e}"));
        if status == ServingStatus::NotServing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, ServingStatus::NotServing);
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("new connections are accepted during the drain");
    let refused = AssignmentServiceClient::new(channel)
        .get_inbox_settings(as_actor("admin", pb::GetInboxSettingsRequest {}))
        .await;
    let refused = expect_code(refused, Code::Unavailable);
    assert_eq!(reason(&refused), "SHUTTING_DOWN");

    // The running stream finishes its work; then the server closes.
    tx.send(pb::BulkAssignRequest {
        payload: Some(pb::bulk_assign_request::Payload::Conversations(
            pb::ConversationBatch {
                conversation_ids: vec!["c1".into()],
            },
        )),
    })
    .await
    .unwrap();
    drop(tx);
    let mut summary = None;
    while let Some(message) = stream.message().await.expect("the stream finishes") {
        if let Some(pb::bulk_assign_response::Payload::Summary(s)) = message.payload {
            summary = Some(s);
        }
    }
    assert_eq!(summary.expect("a summary").assigned, 1);
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the drain ends once the running calls have")
        .unwrap();
    assert!(
        health_on_new_connection(addr).await.is_err(),
        "the listener is closed after the drain"
    );
}
