//! The auto-assign coalescer's queue per campaign: bounded, and callers that gave up are not served.

use std::time::Duration;

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::harness::*;

/// Admin "admin", organizer "org-a" who may reply to everything, auto-assignment on.
async fn campaign(flags: &[&str]) -> TestApp {
    let app = TestApp::start_configured(flags).await;
    app.admin("admin").await;
    app.organizer("org-a").await;
    app.group("admin", "Inbox team", &["org-a"], true, scope_all())
        .await;
    app.enable_auto_assign().await;
    app
}

/// Holds the campaign's auto-assign lock from outside the service.
const LOCK_CAMPAIGN: &str = "SELECT 1 FROM inbox_settings WHERE campaign_id = $1 FOR UPDATE";

fn trigger(n: usize) -> pb::AutoAssignConversationRequest {
    pb::AutoAssignConversationRequest {
        priority: Default::default(),
        conversation_id: format!("c{n}"),
        trigger_id: format!("t{n}"),
        member_id: format!("m{n}"),
        member_tags: vec![],
    }
}

fn spawn_trigger(
    channel: &Channel,
    n: usize,
) -> tokio::task::JoinHandle<Result<pb::AutoAssignConversationResponse, Status>> {
    let mut client = AssignmentServiceClient::new(channel.clone());
    tokio::spawn(async move {
        client
            .auto_assign_conversation(system(CAMPAIGN, trigger(n)))
            .await
            .map(|reply| reply.into_inner())
    })
}

async fn recorded_triggers(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT trigger_id FROM auto_assign_triggers ORDER BY trigger_id")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn triggers_past_the_queue_cap_are_refused_with_resource_exhausted() {
    let app = campaign(&["--auto-assign-max-queue", "2"]).await;
    let channel = app.channel().await;
    let (lock, holder) = app.hold_locks(LOCK_CAMPAIGN).await;
    let first = spawn_trigger(&channel, 1);
    app.until_blocked_by(holder).await;

    // Four more wait behind the stuck batch: two fit in the queue, two are refused at once.
    let mut waiting = tokio::task::JoinSet::new();
    for n in 2..=5 {
        let task = spawn_trigger(&channel, n);
        waiting.spawn(async move { (n, task.await.unwrap()) });
    }
    let mut refused = Vec::new();
    for _ in 0..2 {
        let (n, result) = waiting.join_next().await.unwrap().unwrap();
        let status = expect_code(result, Code::ResourceExhausted);
        assert_eq!(reason(&status), "AUTO_ASSIGN_QUEUE_FULL");
        refused.push(n);
    }

    lock.rollback().await.unwrap();
    first.await.unwrap().expect("the stuck batch completes");
    while let Some(joined) = waiting.join_next().await {
        let (n, result) = joined.unwrap();
        result.unwrap_or_else(|status| panic!("queued trigger t{n} failed: {status:?}"));
    }
    let recorded = recorded_triggers(&app).await;
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    for n in refused {
        assert!(!recorded.contains(&format!("t{n}")), "refused t{n} was run");
    }
}

#[tokio::test]
async fn triggers_whose_callers_gave_up_are_not_run() {
    let app = campaign(&[]).await;
    let channel = app.channel().await;
    let (lock, holder) = app.hold_locks(LOCK_CAMPAIGN).await;
    let first = spawn_trigger(&channel, 1);
    app.until_blocked_by(holder).await;

    // Queued behind the stuck batch, this caller gives up.
    let mut impatient = system(CAMPAIGN, trigger(2));
    impatient.set_timeout(Duration::from_millis(300));
    let status = AssignmentServiceClient::new(channel.clone())
        .auto_assign_conversation(impatient)
        .await
        .expect_err("gives up while the lock is held");
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    let patient = spawn_trigger(&channel, 3);
    // The server's copy of the deadline drops the call a moment after the client gave up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.rollback().await.unwrap();

    first.await.unwrap().expect("the stuck batch completes");
    patient
        .await
        .unwrap()
        .expect("a caller still waiting is served");
    assert_eq!(recorded_triggers(&app).await, ["t1", "t3"]);
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM conversations WHERE conversation_id = 'c2'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(created, 0, "nothing of the abandoned trigger was written");
}
