//! WatchAssignmentEvents: every committed change, once, in one order for every reader, resumable.

use std::time::Duration;

use assignment_service::pb;
use tonic::Streaming;

use crate::harness::*;
use crate::production::{count, scrape};

/// Admin "admin", organizers org1 (in a group covering tag "vol") and org2; conversations c1 (vol), c2.
/// The sweep runs often, so an event written behind the service's back (as a dead replica would leave it)
/// is numbered soon.
async fn campaign() -> TestApp {
    let app = TestApp::start_configured(&["--waiting-sweep-interval", "200ms"]).await;
    app.admin("admin").await;
    app.organizer("org1").await;
    app.organizer("org2").await;
    app.group(
        "admin",
        "Volunteers",
        &["org1", "org2"],
        true,
        scope_tags(&["vol"]),
    )
    .await;
    app.conversation("c1", &["vol"]).await;
    app.conversation("c2", &[]).await;
    app
}

pub(crate) async fn watch(
    app: &TestApp,
    actor: Option<&str>,
    cursor: &str,
) -> Streaming<pb::WatchAssignmentEventsResponse> {
    let request = pb::WatchAssignmentEventsRequest {
        cursor: cursor.into(),
        ..Default::default()
    };
    let request = match actor {
        Some(actor) => as_actor(actor, request),
        None => system(CAMPAIGN, request),
    };
    app.assignments()
        .await
        .watch_assignment_events(request)
        .await
        .unwrap()
        .into_inner()
}

/// The next `n` events of a watch, failing after 5 s.
pub(crate) async fn next_events(
    stream: &mut Streaming<pb::WatchAssignmentEventsResponse>,
    n: usize,
) -> Vec<pb::AssignmentEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived: {events:?}", events.len()))
            .unwrap()
            .expect("the stream stays open");
        events.push(message.event.unwrap());
    }
    events
}

/// Nothing more arrives within a short while.
pub(crate) async fn quiet(stream: &mut Streaming<pb::WatchAssignmentEventsResponse>) {
    let more = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(more.is_err(), "unexpected {more:?}");
}

pub(crate) async fn assign(app: &TestApp, conversation: &str, to: &str) {
    app.assignments()
        .await
        .assign_conversation(as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: conversation.into(),
                assignee_id: to.into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
}

pub(crate) async fn unassign(app: &TestApp, conversation: &str) {
    app.assignments()
        .await
        .unassign_conversation(as_actor(
            "admin",
            pb::UnassignConversationRequest {
                return_to_queue: false,
                conversation_id: conversation.into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
}

/// The whole campaign's history, through ListAssignmentHistory's pages of 7.
async fn history(app: &TestApp) -> Vec<pb::AssignmentEvent> {
    app.campaign_history(7).await
}

fn ids(events: &[pb::AssignmentEvent]) -> Vec<i64> {
    events.iter().map(|e| e.event_id).collect()
}

#[tokio::test]
async fn a_watcher_sees_every_change_once_in_order_and_resumes_from_any_cursor() {
    let app = campaign().await;
    assign(&app, "c2", "org2").await; // before the watch: not delivered
    let lag_count = "feed_delivery_lag_seconds_count";
    let delivered_before = count(&scrape(app.metrics_addr).await, lag_count);
    let mut watcher = watch(&app, Some("admin"), "").await;
    assign(&app, "c1", "org1").await;
    app.assignments()
        .await
        .resolve_conversation(as_actor(
            "admin",
            pb::ResolveConversationRequest {
                conversation_id: "c1".into(),
            },
        ))
        .await
        .unwrap();
    app.assignments()
        .await
        .set_availability(system(
            CAMPAIGN,
            pb::SetAvailabilityRequest {
                user_id: "org2".into(),
                availability: pb::Availability::Away.into(),
            },
        ))
        .await
        .unwrap();
    unassign(&app, "c2").await;
    let events = next_events(&mut watcher, 4).await;
    // Operators see how late events reach watchers (other tests share the process's metrics).
    let delivered_after = count(&scrape(app.metrics_addr).await, lag_count);
    assert!(
        delivered_after >= delivered_before + 4.0,
        "{delivered_before} -> {delivered_after}"
    );
    use pb::AssignmentAction as A;
    let actions: Vec<A> = events.iter().map(|e| e.action()).collect();
    assert_eq!(
        actions,
        vec![A::Assign, A::Resolve, A::AvailabilityChanged, A::Unassign]
    );
    quiet(&mut watcher).await;
    // The same events, in the same order, in history.
    let all = history(&app).await;
    assert_eq!(ids(&all[1..]), ids(&events));
    assert_eq!(all[1].cursor, events[0].cursor);

    // Resuming from any cursor yields exactly what came after it.
    drop(watcher);
    let mut resumed = watch(&app, Some("admin"), &events[1].cursor).await;
    assert_eq!(ids(&next_events(&mut resumed, 2).await), ids(&events[2..]));
    quiet(&mut resumed).await;
    let mut from_start = watch(&app, None, &all[0].cursor).await;
    assert_eq!(ids(&next_events(&mut from_start, 4).await), ids(&events));
    // A cursor of another campaign, or made up, is refused.
    let status = app
        .assignments()
        .await
        .watch_assignment_events(as_actor(
            "admin",
            pb::WatchAssignmentEventsRequest {
                cursor: "not-a-cursor".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a bad cursor");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn organizers_see_the_events_of_what_they_may_view_and_their_own_availability() {
    let app = campaign().await;
    let mut org1 = watch(&app, Some("org1"), "").await;
    assign(&app, "c2", "org2").await; // c2: no group covers it; org1 may not see it
    assign(&app, "c1", "org2").await; // c1: covered by org1's group
    app.assignments()
        .await
        .set_availability(as_actor(
            "org1",
            pb::SetAvailabilityRequest {
                user_id: String::new(),
                availability: pb::Availability::Away.into(),
            },
        ))
        .await
        .unwrap();
    app.assignments()
        .await
        .set_availability(as_actor(
            "org2",
            pb::SetAvailabilityRequest {
                user_id: String::new(),
                availability: pb::Availability::Away.into(),
            },
        ))
        .await
        .unwrap();
    let events = next_events(&mut org1, 2).await;
    assert_eq!(events[0].conversation_id, "c1");
    assert_eq!(events[1].user_id, "org1");
    quiet(&mut org1).await;
}

/// Transaction A takes its event id first but commits after B: watchers and history pagers both see both,
/// exactly once, in commit order.
#[tokio::test]
async fn an_event_committed_late_with_an_early_id_is_seen_once() {
    let app = campaign().await;
    let mut watcher = watch(&app, None, "").await;
    let mut late = app.store.pool().begin().await.unwrap();
    let late_id: i64 = sqlx::query_scalar(
        "INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, source, stamp) \
         VALUES ($1, 'c2', 'ASSIGN', 'org2', 'MANUAL', 0) RETURNING event_id",
    )
    .bind(CAMPAIGN)
    .fetch_one(&mut *late)
    .await
    .unwrap();
    assign(&app, "c1", "org1").await;
    let first = next_events(&mut watcher, 1).await;
    assert_eq!(first[0].conversation_id, "c1");
    let b_id: i64 =
        sqlx::query_scalar("SELECT event_id FROM assignment_events WHERE conversation_id = 'c1'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(b_id > late_id, "B took its id after A");
    // A pager that read up to B now must still get A later.
    let before = history(&app).await;
    late.commit().await.unwrap();
    let second = next_events(&mut watcher, 1).await;
    assert_eq!(second[0].conversation_id, "c2");
    quiet(&mut watcher).await;
    let after = history(&app).await;
    assert_eq!(ids(&after), [ids(&before), ids(&second)].concat());
    // Resuming from B's cursor yields A, once.
    let mut resumed = watch(&app, None, &first[0].cursor).await;
    assert_eq!(ids(&next_events(&mut resumed, 1).await), ids(&second));
    quiet(&mut resumed).await;
}

/// 3 replicas take manual, bulk and auto changes at once while one watcher per replica reads: every
/// watcher receives exactly the committed history of the campaign, in the same order.
#[tokio::test]
async fn watchers_on_three_replicas_receive_the_same_history() {
    let app = campaign().await;
    app.enable_auto_assign().await;
    let replicas = [app.replica().await, app.replica().await];
    let mut watchers = vec![
        watch(&app, None, "").await,
        watch(&replicas[0], Some("admin"), "").await,
        watch(&replicas[1], None, "").await,
    ];
    let mut work = Vec::new();
    for i in 0..30 {
        let id = format!("m{i:02}");
        app.conversation(&id, &["vol"]).await;
        let mut client = [&app, &replicas[0], &replicas[1]][i % 3]
            .assignments()
            .await;
        work.push(tokio::spawn(async move {
            client
                .assign_conversation(as_actor(
                    "admin",
                    pb::AssignConversationRequest {
                        conversation_id: id,
                        assignee_id: "org1".into(),
                        expected_version: None,
                    },
                ))
                .await
                .unwrap();
        }));
    }
    for i in 0..30 {
        let mut client = [&app, &replicas[0], &replicas[1]][i % 3]
            .assignments()
            .await;
        work.push(tokio::spawn(async move {
            let id = format!("a{i:02}");
            client
                .auto_assign_conversation(system(
                    CAMPAIGN,
                    pb::AutoAssignConversationRequest {
                        priority: Default::default(),
                        conversation_id: id.clone(),
                        trigger_id: id,
                        member_id: "m".into(),
                        member_tags: vec!["vol".into()],
                    },
                ))
                .await
                .unwrap();
        }));
    }
    {
        let mut client = replicas[1].assignments().await;
        work.push(tokio::spawn(async move {
            let ids: Vec<String> = (0..30).map(|i| format!("m{i:02}")).collect();
            let messages = vec![pb::BulkUnassignRequest {
                conversations: Some(pb::ConversationBatch {
                    conversation_ids: ids,
                }),
            }];
            let mut stream = client
                .bulk_unassign(as_actor("admin", tokio_stream::iter(messages)))
                .await
                .unwrap()
                .into_inner();
            while stream.message().await.unwrap().is_some() {}
        }));
    }
    for task in work {
        task.await.unwrap();
    }
    let all = history(&app).await;
    assert!(all.len() >= 60, "{} events", all.len());
    for watcher in &mut watchers {
        let got = next_events(watcher, all.len()).await;
        assert_eq!(
            ids(&got),
            ids(&all),
            "a watcher saw exactly the history, in order"
        );
        quiet(watcher).await;
    }
}

/// A watcher that stops reading is ended with RESOURCE_EXHAUSTED once it falls too far behind, rather
/// than the server buffering for it without bound; it resumes from the last cursor it received. (Driven
/// below the transport, whose own buffers would hide a stopped reader for thousands of events.)
#[tokio::test]
async fn a_reader_too_far_behind_is_cut_off_and_resumes_from_its_last_cursor() {
    use assignment_service::service::feed::{self, Feed, WatchRequest};
    use assignment_service::service::{Caller, SystemCall};
    let app = campaign().await;
    // Small buffers: a reader two events and two batches behind is too far behind.
    let hub = Feed::with_buffers(app.store.clone(), 2, 2);
    let listener = tokio::spawn(assignment_service::service::notices::listen(
        app.store.clone(),
        hub.clone(),
        assignment_service::service::agenda::Agendas::new(false),
    ));
    let system = Caller::System(SystemCall {
        campaign_id: CAMPAIGN.into(),
        request_id: None,
    });
    let (mut slow, run) = feed::watch(&app.store, &hub, system, WatchRequest::default())
        .await
        .unwrap();
    tokio::spawn(run);
    // Far more changes, each its own commit, than the reader's queue and the fan-out keep.
    const CHANGES: usize = 100;
    for round in 0..CHANGES {
        if round % 2 == 0 {
            assign(&app, "c1", "org1").await;
        } else {
            unassign(&app, "c1").await;
        }
    }
    let mut last_cursor = String::new();
    let mut received = 0;
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.recv()).await {
            Ok(Some(Ok(delivered))) => {
                received += 1;
                last_cursor = delivered.place.cursor;
            }
            Ok(Some(Err(err))) => break err,
            Ok(None) => panic!("the stream ended without an error after {received} events"),
            Err(_) => panic!("the stream went quiet after {received} events, not cut off"),
        }
    };
    assert_eq!(
        err.reason(),
        Some(assignment_service::error::Reason::FeedReaderTooSlow)
    );
    // It may first have caught up from the database what it could read; what follows the cut-off is not
    // lost.
    assert!((1..=CHANGES).contains(&received), "{received}");
    listener.abort();
    // Resuming from the last cursor yields the rest, exactly.
    let mut resumed = watch(&app, Some("admin"), &last_cursor).await;
    let rest = next_events(&mut resumed, CHANGES - received).await;
    assert_eq!(rest.len(), CHANGES - received);
    quiet(&mut resumed).await;
}

#[tokio::test]
async fn a_watcher_demoted_sees_only_what_they_may_view_and_deactivated_is_cut_off() {
    let app = campaign().await;
    app.admin("lead").await;
    app.conversation("c3", &[]).await;
    let mut watcher = watch(&app, Some("lead"), "").await;
    assign(&app, "c2", "org2").await;
    assert_eq!(next_events(&mut watcher, 1).await[0].conversation_id, "c2");

    // Demoted to organizer (no group): c1 is no longer theirs to see; c3, assigned to them, is.
    app.organizer("lead").await;
    assign(&app, "c1", "org1").await;
    assign(&app, "c3", "lead").await;
    let event = next_events(&mut watcher, 1).await.remove(0);
    assert_eq!(
        (event.conversation_id.as_str(), event.to_user_id.as_deref()),
        ("c3", Some("lead"))
    );
    quiet(&mut watcher).await;

    // Deactivated: the next event ends the stream with the same refusal a new call gets.
    app.deactivate("lead").await;
    unassign(&app, "c1").await;
    let ended = tokio::time::timeout(Duration::from_secs(5), watcher.message())
        .await
        .expect("the stream ends")
        .expect_err("with an error");
    let refused = app
        .assignments()
        .await
        .watch_assignment_events(as_actor(
            "lead",
            pb::WatchAssignmentEventsRequest::default(),
        ))
        .await
        .expect_err("an inactive actor is refused");
    assert_eq!(ended.code(), refused.code());
    assert_eq!(ended.message(), refused.message());
}

#[tokio::test]
async fn a_cursor_past_the_retention_is_out_of_range_and_says_how_to_resync() {
    let app = TestApp::start_configured(&["--feed-retention", "1s"]).await;
    app.admin("admin").await;
    app.organizer("org1").await;
    app.conversation("c1", &[]).await;
    let mut stream = watch(&app, Some("admin"), "").await;
    assign(&app, "c1", "org1").await;
    let first = next_events(&mut stream, 1).await;
    unassign(&app, "c1").await;
    let second = next_events(&mut stream, 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Resuming would replay the unassign, which is past the retention.
    let err = app
        .assignments()
        .await
        .watch_assignment_events(as_actor(
            "admin",
            pb::WatchAssignmentEventsRequest {
                cursor: first[0].cursor.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("an expired cursor");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(reason(&err), "FEED_CURSOR_EXPIRED");
    assert!(
        err.message().contains("watch from now"),
        "{}",
        err.message()
    );
    // Nothing after the newest cursor is missed, however old it is; and an empty cursor always works.
    let mut resumed = watch(&app, Some("admin"), &second[0].cursor).await;
    let mut fresh = watch(&app, Some("admin"), "").await;
    assign(&app, "c1", "org1").await;
    let third = next_events(&mut resumed, 1).await;
    assert_eq!(next_events(&mut fresh, 1).await, third);
}

/// A campaign with auto-assignment on whose sweep never runs in a test: only the service's own writes
/// number events.
async fn auto_campaign() -> TestApp {
    let app = TestApp::start_configured(&["--waiting-sweep-interval", "1h"]).await;
    app.admin("admin").await;
    app.organizer("org1").await;
    app.group("admin", "Everyone", &["org1"], true, scope_all())
        .await;
    app.enable_auto_assign().await;
    app.conversation("c2", &[]).await;
    app
}

/// Commits `n` events for c2 with no feed number, as a replica that died before numbering leaves them;
/// returns their ids.
async fn unnumbered_events(app: &TestApp, n: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, source, stamp) \
         SELECT $1, 'c2', 'ASSIGN', 'org1', 'MANUAL', 0 FROM generate_series(1, $2) RETURNING event_id",
    )
    .bind(CAMPAIGN)
    .bind(n)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

/// Every event's feed number by event id, in feed order; `None` for those not numbered yet.
async fn feed_numbers(app: &TestApp) -> Vec<(i64, Option<i64>)> {
    sqlx::query_as("SELECT event_id, seq FROM assignment_events ORDER BY seq NULLS LAST, event_id")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
}

async fn head(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT last_seq FROM feed_heads")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

async fn auto_assigned_event(app: &TestApp, conversation: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT event_id FROM assignment_events WHERE conversation_id = $1 AND source = 'AUTO'",
    )
    .bind(conversation)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

/// An auto-assign batch numbers, in its own transaction, the events others left unnumbered and then its
/// own: by the time the flow builder has its answer, the feed and the history show both, in that order.
#[tokio::test]
async fn an_auto_assign_batch_numbers_events_left_behind_before_its_own() {
    let app = auto_campaign().await;
    let late = unnumbered_events(&app, 2).await;
    let answer = app.auto_assign("c9").await;
    assert_eq!(
        answer.conversation.unwrap().assignee_id.as_deref(),
        Some("org1")
    );
    let own = auto_assigned_event(&app, "c9").await;
    let numbers = feed_numbers(&app).await;
    assert!(
        numbers.iter().all(|(_, seq)| seq.is_some()),
        "everything committed is numbered when the call returns: {numbers:?}"
    );
    let order: Vec<i64> = numbers.iter().map(|(id, _)| *id).collect();
    assert_eq!(&order[order.len() - 3..], &[late[0], late[1], own]);
    let seqs: Vec<i64> = numbers.iter().filter_map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "dense");
    assert_eq!(head(&app).await, seqs.len() as i64);
    let listed = history(&app).await;
    assert_eq!(
        ids(&listed),
        public_ids(&app, &seqs).await,
        "the history pages in feed order"
    );
}

/// The ids clients see of the campaign's events numbered `seqs`.
async fn public_ids(app: &TestApp, seqs: &[i64]) -> Vec<i64> {
    use assignment_service::domain::opaque::CampaignIds;
    let ids = CampaignIds::new(app.store.opaque_secret().await.unwrap(), CAMPAIGN);
    seqs.iter().map(|seq| ids.event_id(*seq)).collect()
}

/// More events left unnumbered than one transaction numbers: the batch numbers the oldest, leaves its own
/// for after the rest, and the sequencer finishes at once (this campaign's sweep never runs).
#[tokio::test]
async fn a_backlog_longer_than_a_batch_numbers_is_finished_after_it_in_order() {
    let app = auto_campaign().await;
    let late = unnumbered_events(&app, 1500).await;
    app.auto_assign("c9").await;
    let own = auto_assigned_event(&app, "c9").await;
    let mut numbers = feed_numbers(&app).await;
    for _ in 0..100 {
        if numbers.iter().all(|(_, seq)| seq.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        numbers = feed_numbers(&app).await;
    }
    let seqs: Vec<i64> = numbers
        .iter()
        .map(|(_, seq)| seq.expect("numbered"))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "dense");
    let order: Vec<i64> = numbers.iter().map(|(id, _)| *id).collect();
    let mut expected = late.clone();
    expected.sort_unstable();
    expected.push(own);
    assert_eq!(&order[order.len() - expected.len()..], expected.as_slice());
    assert_eq!(head(&app).await, seqs.len() as i64);
}

/// The campaign's feed heads, as (campaign, head) rows.
async fn heads(app: &TestApp) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT campaign_id, last_seq FROM feed_heads ORDER BY campaign_id")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
}

/// ListAssignmentHistory is a read: it numbers nothing, not even events a dead replica left unnumbered
/// (the feed's heads and numbers stay as they were), yet lists a change committed just before it.
#[tokio::test]
async fn listing_the_history_writes_nothing_and_shows_what_was_just_committed() {
    let app = auto_campaign().await;
    let left = unnumbered_events(&app, 2).await;
    let (numbers, heads_before) = (feed_numbers(&app).await, heads(&app).await);
    history(&app).await;
    assert_eq!(
        feed_numbers(&app).await,
        numbers,
        "the read numbered events"
    );
    assert_eq!(
        heads(&app).await,
        heads_before,
        "the read moved a feed head"
    );

    // The writer's own wake-up numbers what it committed (and what was left before it).
    assign(&app, "c2", "org1").await;
    let listed = history(&app).await;
    let last = listed.last().expect("the assignment is listed");
    assert_eq!(
        (last.action(), last.actor_id.as_deref()),
        (pb::AssignmentAction::Assign, Some("admin")),
        "the change just committed is listed last"
    );
    assert_eq!(listed.len(), left.len() + 1, "{listed:?}");
}
