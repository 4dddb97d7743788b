//! The dashboard and the alert rules shipped in `deploy/` name only metrics the service exports.

use std::collections::BTreeSet;
use std::time::Duration;

use assignment_service::pb;
use tonic::Code;

use crate::harness::*;
use crate::production::scrape;

/// The families of the service's metrics: any name in a deploy file starting so is one of ours.
const FAMILIES: [&str; 10] = [
    "grpc_server_",
    "db_",
    "auto_assign_",
    "bulk_",
    "feed_",
    "replies_",
    "reply_timer_",
    "time_to_reply_",
    "shift_",
    "relay_",
];

/// Every metric name `file` (under `deploy/`) uses.
fn metric_names(file: &str) -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| FAMILIES.iter().any(|family| word.starts_with(family)))
        .map(str::to_owned)
        .collect()
}

fn exported(body: &str, name: &str) -> bool {
    body.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    // The relay publishes to a real NATS, which goes away: the feed then runs ahead (the relay's lag).
    let mut nats = crate::nats::NatsServer::start().await;
    let nats_url = nats.url();
    let app = TestApp::start_configured(&[
        "--waiting-sweep-interval",
        "100ms",
        "--nats-url",
        &nats_url,
        "--relay-interval",
        "50ms",
    ])
    .await;
    nats.kill();
    app.admin("admin").await;
    app.organizer("org1").await;
    app.group("admin", "Everyone", &["org1"], true, scope_all())
        .await;
    app.enable_auto_assign().await;
    let mut watch = app
        .assignments()
        .await
        .watch_assignment_events(as_actor(
            "admin",
            pb::WatchAssignmentEventsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();

    // Auto-assignment queues a conversation while nobody is there, and drains it when org1 comes back.
    app.set_availability("org1", pb::Availability::Away).await;
    let queued = app
        .assignments()
        .await
        .auto_assign_conversation(system(
            CAMPAIGN,
            pb::AutoAssignConversationRequest {
                priority: Default::default(),
                conversation_id: "c1".into(),
                trigger_id: "t1".into(),
                member_id: "m1".into(),
                member_tags: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queued.outcome(), pb::AutoAssignOutcome::Queued);
    tokio::time::sleep(Duration::from_millis(300)).await; // the sweep publishes the queue's gauges
    app.set_availability("org1", pb::Availability::Available)
        .await;
    let mut drained = false;
    for _ in 0..100 {
        if app.stored("c1").await.0.as_deref() == Some("org1") {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(drained, "c1 is drained to org1");
    // A reply ends a member's wait (time to reply); with a silence timer, c1's lapses (overdue, lateness).
    app.auto_assign("c2").await;
    app.assignments()
        .await
        .record_reply(system(
            CAMPAIGN,
            pb::RecordReplyRequest {
                conversation_id: "c2".into(),
                message_id: "r1".into(),
                sender_id: "org1".into(),
            },
        ))
        .await
        .unwrap();
    let timer = pb::UpdateInboxSettingsRequest {
        reply_within_seconds: Some(1),
        ..Default::default()
    };
    app.update_settings("admin", timer).await;
    let mut lapsed = false;
    for _ in 0..100 {
        if app.stored("c1").await.0.is_none() {
            lapsed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lapsed, "org1 let c1's reply lapse");
    // org1's shift ends a second from now (a boundary acted on: counted, and its lateness measured).
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let end = now.checked_add(jiff::SignedDuration::from_secs(1)).unwrap();
    let schedule = pb::SetShiftScheduleRequest {
        user_id: "org1".into(),
        weekly: vec![],
        exceptions: vec![pb::ShiftException {
            date: now.date().to_string(),
            off: false,
            start: now.time().strftime("%H:%M:%S").to_string(),
            end: end.time().strftime("%H:%M:%S").to_string(),
        }],
    };
    app.assignments()
        .await
        .set_shift_schedule(as_actor("admin", schedule))
        .await
        .unwrap();
    // The feed delivered the changes to the watcher.
    tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("an event")
        .unwrap()
        .expect("the stream stays open");
    // A bulk action.
    let mut client = app.assignments().await;
    let mut bulk = client
        .bulk_unassign(as_actor(
            "admin",
            tokio_stream::iter(vec![pb::BulkUnassignRequest {
                conversations: Some(pb::ConversationBatch {
                    conversation_ids: vec!["c1".into()],
                }),
            }]),
        ))
        .await
        .unwrap()
        .into_inner();
    while bulk.message().await.unwrap().is_some() {}

    // A call shed by a server whose only slot an open stream holds.
    let small = TestApp::start_configured(&["--max-concurrent-calls", "1"]).await;
    small.admin("admin").await;
    let _held = small
        .assignments()
        .await
        .watch_assignment_events(as_actor(
            "admin",
            pb::WatchAssignmentEventsRequest::default(),
        ))
        .await
        .unwrap();
    let shed = small
        .assignments()
        .await
        .get_inbox_settings(as_actor("admin", pb::GetInboxSettingsRequest::default()))
        .await;
    expect_code(shed, Code::ResourceExhausted);

    // The shift's end has been acted on, and the relay's lag reported (every 2 s).
    let mut body = scrape(app.metrics_addr).await;
    for _ in 0..100 {
        if exported(&body, "shift_boundaries_total") && exported(&body, "relay_lag_seconds") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        body = scrape(app.metrics_addr).await;
    }
    let dashboard = metric_names("grafana/assignment-service.json");
    let alerts = metric_names("prometheus/alerts.yaml");
    assert!(
        dashboard.len() >= 12,
        "the dashboard's metrics: {dashboard:?}"
    );
    assert!(alerts.len() >= 5, "the alerts' metrics: {alerts:?}");
    let missing: Vec<&String> = dashboard
        .iter()
        .chain(&alerts)
        .filter(|name| !exported(&body, name))
        .collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}\n{body}"
    );
}
