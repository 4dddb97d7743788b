//! Watchers and the database: however many watch, they take turns at their own small budget of reads, so
//! calls keep the pool and health keeps reporting the database, not the pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use tokio::task::JoinSet;
use tonic::Streaming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

const WATCHERS: usize = 1000;
/// Connections the watchers spread over (a connection carries a bounded number of streams at once).
const CHANNELS: usize = 10;

fn watch_request(i: usize) -> tonic::Request<pb::WatchAssignmentEventsRequest> {
    let request = pb::WatchAssignmentEventsRequest::default();
    // Half watch as a user (authenticated, with what they may see read per batch), half as a system.
    if i.is_multiple_of(2) {
        as_actor("admin", request)
    } else {
        system(CAMPAIGN, request)
    }
}

/// The next event of a watch (failing after a minute: a thousand streams share a small machine).
async fn next_event(
    stream: &mut Streaming<pb::WatchAssignmentEventsResponse>,
) -> pb::AssignmentEvent {
    tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("an event arrives")
        .expect("the stream stays open")
        .expect("the stream does not end")
        .event
        .unwrap()
}

#[tokio::test]
async fn a_thousand_watchers_leave_health_serving_and_calls_answering() {
    let app = TestApp::start_configured(&[
        "--pool-size",
        "4",
        "--max-concurrent-calls",
        "4096",
        // Every watcher here is the same caller and actor; fair shares are `fairness.rs`'s subject.
        "--max-calls-per-caller",
        "4096",
        "--max-calls-per-actor",
        "4096",
        "--health-check-interval",
        "50ms",
    ])
    .await;
    app.admin("admin").await;
    app.organizer("o1").await;
    app.conversation("c1", &[]).await;

    // Every status health reports from now until the end: it must never say NOT_SERVING.
    let mut health = HealthClient::new(app.channel().await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let reported = Arc::new(Mutex::new(Vec::new()));
    let listening = {
        let reported = reported.clone();
        tokio::spawn(async move {
            while let Ok(Some(reply)) = health.message().await {
                reported.lock().unwrap().push(reply.status());
            }
        })
    };

    // Another caller keeps reading while the watchers open: each of its calls answers, within a
    // deadline of the pool's acquire timeout.
    let opened = Arc::new(AtomicBool::new(false));
    let caller = {
        let opened = opened.clone();
        let mut client = app.assignments().await;
        tokio::spawn(async move {
            let mut answered = 0;
            loop {
                let mut request = as_actor(
                    "admin",
                    pb::GetConversationRequest {
                        conversation_id: "c1".into(),
                    },
                );
                request.set_timeout(Duration::from_secs(5));
                client
                    .get_conversation(request)
                    .await
                    .unwrap_or_else(|status| {
                        panic!("a call failed while the watchers opened: {status:?}")
                    });
                answered += 1;
                if opened.load(Ordering::SeqCst) {
                    return answered;
                }
            }
        })
    };

    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        channels.push(app.channel().await);
    }
    let mut opening = JoinSet::new();
    for i in 0..WATCHERS {
        let mut client = AssignmentServiceClient::new(channels[i % CHANNELS].clone());
        opening.spawn(async move {
            let stream = client
                .watch_assignment_events(watch_request(i))
                .await
                .unwrap_or_else(|status| panic!("watcher {i} was refused: {status:?}"))
                .into_inner();
            (i, stream)
        });
    }
    let mut streams: Vec<Option<Streaming<_>>> = (0..WATCHERS).map(|_| None).collect();
    while let Some(joined) = opening.join_next().await {
        let (i, stream) = joined.unwrap();
        streams[i] = Some(stream);
    }
    opened.store(true, Ordering::SeqCst);
    assert!(caller.await.unwrap() >= 1);

    // Written after every watcher opened: each gets both, once, in order.
    let change = |assignee: Option<&str>| {
        let app = &app;
        let assignee = assignee.map(str::to_owned);
        async move {
            let mut client = app.assignments().await;
            match assignee {
                Some(to) => client
                    .assign_conversation(as_actor(
                        "admin",
                        pb::AssignConversationRequest {
                            conversation_id: "c1".into(),
                            assignee_id: to,
                            expected_version: None,
                        },
                    ))
                    .await
                    .map(|_| ()),
                None => client
                    .unassign_conversation(as_actor(
                        "admin",
                        pb::UnassignConversationRequest {
                            return_to_queue: false,
                            conversation_id: "c1".into(),
                            expected_version: None,
                        },
                    ))
                    .await
                    .map(|_| ()),
            }
        }
    };
    change(Some("o1")).await.unwrap();
    change(None).await.unwrap();
    let written: Vec<i64> = app.history("c1").await.iter().map(|e| e.event_id).collect();
    assert_eq!(written.len(), 2, "{written:?}");

    let mut receiving = JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let mut stream = stream.expect("every watcher opened");
        receiving.spawn(async move {
            let first = next_event(&mut stream).await;
            let second = next_event(&mut stream).await;
            (i, [first.event_id, second.event_id])
        });
    }
    let mut received = 0;
    while let Some(joined) = receiving.join_next().await {
        let (i, ids) = joined.unwrap();
        assert_eq!(ids.to_vec(), written, "watcher {i}");
        received += 1;
    }
    assert_eq!(received, WATCHERS);

    // Health has answered all along, SERVING every time.
    listening.abort();
    let reported = reported.lock().unwrap().clone();
    assert!(!reported.is_empty());
    assert!(
        reported.iter().all(|s| *s == ServingStatus::Serving),
        "health reported {reported:?}"
    );
    assert_eq!(app.health("").await.unwrap(), ServingStatus::Serving);
}
