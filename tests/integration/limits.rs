//! Nothing stalls a replica: idle streams end, their slots come back, and shutdown ends within its drain
//! timeout even with calls still open.

use std::time::{Duration, Instant};

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::harness::*;

type Sender = mpsc::Sender<pb::BulkAssignRequest>;

fn options_message() -> pb::BulkAssignRequest {
    pb::BulkAssignRequest {
        payload: Some(pb::bulk_assign_request::Payload::Options(
            pb::BulkAssignOptions {
                assignee_ids: vec!["admin".into()],
                ..Default::default()
            },
        )),
    }
}

fn ids_message(ids: &[&str]) -> pb::BulkAssignRequest {
    pb::BulkAssignRequest {
        payload: Some(pb::bulk_assign_request::Payload::Conversations(
            pb::ConversationBatch {
                conversation_ids: ids.iter().map(|id| id.to_string()).collect(),
            },
        )),
    }
}

/// A BulkAssign stream by admin "admin" that has sent its options and nothing since; it stays open while
/// the returned sender lives.
async fn idle_stream(channel: Channel) -> (Sender, Streaming<pb::BulkAssignResponse>) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(options_message()).await.unwrap();
    let stream = AssignmentServiceClient::new(channel)
        .bulk_assign(as_actor("admin", ReceiverStream::new(rx)))
        .await
        .expect("the stream opens")
        .into_inner();
    (tx, stream)
}

async fn get_settings(app: &TestApp) -> Result<pb::GetInboxSettingsResponse, tonic::Status> {
    app.assignments()
        .await
        .get_inbox_settings(as_actor("admin", pb::GetInboxSettingsRequest {}))
        .await
        .map(|reply| reply.into_inner())
}

#[tokio::test]
async fn a_stream_that_sends_nothing_is_ended_after_the_idle_timeout() {
    let app = TestApp::start_configured(&["--stream-idle-timeout", "300ms"]).await;
    app.admin("admin").await;
    let started = Instant::now();
    let (_tx, mut stream) = idle_stream(app.channel().await).await;
    let status = stream.message().await.expect_err("an idle stream is ended");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), "STREAM_IDLE");
    assert!(
        status.message().contains("--stream-idle-timeout"),
        "{status:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "ended after {took:?}"
    );
}

#[tokio::test]
async fn a_stream_that_keeps_sending_outlives_the_call_timeout() {
    let app =
        TestApp::start_configured(&["--call-timeout", "400ms", "--stream-idle-timeout", "2s"])
            .await;
    app.admin("admin").await;
    let (tx, mut stream) = idle_stream(app.channel().await).await;
    let started = Instant::now();
    let ids = ["c1", "c2", "c3", "c4", "c5", "c6"];
    for id in ids {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(ids_message(&[id])).await.unwrap();
    }
    drop(tx);
    let mut summary = None;
    while let Some(message) = stream.message().await.expect("not cut") {
        if let Some(pb::bulk_assign_response::Payload::Summary(s)) = message.payload {
            summary = Some(s);
        }
    }
    assert!(
        started.elapsed() > Duration::from_millis(400),
        "ran past the call timeout"
    );
    assert_eq!(summary.expect("a summary").received, ids.len() as i64);
}

#[tokio::test]
async fn idle_streams_hold_every_slot_only_until_they_time_out() {
    let app =
        TestApp::start_configured(&["--max-concurrent-calls", "4", "--stream-idle-timeout", "1s"])
            .await;
    app.admin("admin").await;
    let channel = app.channel().await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(idle_stream(channel.clone()).await);
    }
    let status = expect_code(get_settings(&app).await, Code::ResourceExhausted);
    assert_eq!(reason(&status), "OVERLOADED");

    for (_tx, stream) in &mut streams {
        let status = stream.message().await.expect_err("ended when idle");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }
    // A slot comes back when its stream's response ends, a moment after the client hears of it.
    let mut served = None;
    for _ in 0..100 {
        served = get_settings(&app).await.ok();
        if served.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served.is_some(),
        "calls are served again once the idle streams are gone"
    );
}

#[tokio::test]
async fn shutdown_cancels_calls_still_open_after_the_drain_timeout() {
    let app =
        TestApp::start_configured(&["--drain-timeout", "500ms", "--stream-idle-timeout", "60s"])
            .await;
    app.admin("admin").await;
    let (_tx, mut stream) = idle_stream(app.channel().await).await;
    let started = Instant::now();
    let stopped = tokio::spawn(app.stop());
    let status = stream.message().await.expect_err("cut at shutdown");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "SHUTTING_DOWN");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stops soon after its drain timeout")
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "drained first: {took:?}"
    );
}

#[tokio::test]
async fn sigterm_with_an_idle_stream_open_exits_after_the_drain_timeout() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let addr = format!("127.0.0.1:{}", free_port());
    let (mut child, channel) = spawn_binary(
        &addr,
        &[
            "--drain-timeout",
            "1s",
            "--stream-idle-timeout",
            "60s",
            "--max-concurrent-calls",
            "1",
        ],
        &[],
    )
    .await;
    assignment_service::pb::directory_service_client::DirectoryServiceClient::new(channel.clone())
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
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    // The stream holds the only slot: this call is shed, quietly.
    let (_tx, mut stream) = idle_stream(channel.clone()).await;
    let shed = AssignmentServiceClient::new(channel.clone())
        .get_inbox_settings(as_actor("admin", pb::GetInboxSettingsRequest {}))
        .await;
    expect_code(shed, Code::ResourceExhausted);

    let sent = Instant::now();
    // SAFETY: signalling our own child by pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    let status = stream
        .message()
        .await
        .expect_err("cut at the drain timeout");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if sent.elapsed() > Duration::from_secs(8) {
            let _ = child.kill();
            panic!("still running {:?} after SIGTERM", sent.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = sent.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took >= Duration::from_secs(1),
        "waited for the drain: {took:?}"
    );

    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let failed: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("call failed"))
        .collect();
    assert!(
        failed.iter().any(|line| line.contains("Unavailable")),
        "the cancelled stream is logged:\n{log}"
    );
    assert!(
        !failed.iter().any(|line| line.contains("ResourceExhausted")),
        "shed calls are not logged at info:\n{log}"
    );
}
