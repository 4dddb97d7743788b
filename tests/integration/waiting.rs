//! The waiting queue: conversations nobody can take wait, and drain oldest first the moment someone can —
//! exactly once across replicas, within capacity, with history matching state.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use assignment_service::domain::auto_assign::{Priority, effective_arrival};
use assignment_service::pb;
use tonic::Code;

use crate::harness::*;

/// Admin "admin" and organizers who may reply to everything, all AWAY; auto-assignment on with `settings`.
async fn campaign(organizers: &[&str], settings: pb::UpdateInboxSettingsRequest) -> TestApp {
    let app = TestApp::start_configured(&["--waiting-sweep-interval", "200ms"]).await;
    app.admin("admin").await;
    for org in organizers {
        app.organizer(org).await;
        app.set_availability(org, pb::Availability::Away).await;
    }
    app.group("admin", "Everyone", organizers, true, scope_all())
        .await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            auto_assign_enabled: Some(true),
            ..settings
        },
    )
    .await;
    app
}

fn trigger_request(conversation: &str) -> tonic::Request<pb::AutoAssignConversationRequest> {
    system(CAMPAIGN, auto_assign_request(conversation))
}

async fn trigger(app: &TestApp, conversation: &str) -> pb::AutoAssignConversationResponse {
    app.auto_assign(conversation).await
}

async fn waiting(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .assignments()
            .await
            .list_waiting_conversations(as_actor(
                "admin",
                pb::ListWaitingConversationsRequest {
                    page_size: 2,
                    page_token: token,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        for (i, item) in page.conversations.iter().enumerate() {
            assert_eq!(
                item.position as usize,
                ids.len() + i + 1,
                "positions count from 1"
            );
            assert!(item.waiting_seconds >= 0.0);
        }
        ids.extend(
            page.conversations
                .into_iter()
                .map(|w| w.conversation.unwrap().conversation_id),
        );
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

/// Waits until the queue holds `expected` conversations (drains run just after the freeing commit).
async fn until_waiting(app: &TestApp, expected: i64) {
    for _ in 0..500 {
        if app.count("waiting_conversations").await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{} conversations wait, expected {expected}",
        app.count("waiting_conversations").await
    );
}

async fn auto_assigned_in_order(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT conversation_id, to_user_id FROM assignment_events \
         WHERE source = 'AUTO' AND action = 'ASSIGN' ORDER BY event_id",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn the_queue_drains_oldest_first_holds_while_off_and_loses_what_is_assigned_or_resolved() {
    let app = campaign(&["org-a", "org-b"], Default::default()).await;
    for (i, id) in ["c1", "c2", "c3", "c4", "c5"].iter().enumerate() {
        let reply = trigger(&app, id).await;
        assert_eq!(reply.outcome(), pb::AutoAssignOutcome::Queued);
        assert_eq!(reply.queue_position, Some(i as i64 + 1));
    }
    assert_eq!(waiting(&app).await, vec!["c1", "c2", "c3", "c4", "c5"]);
    // A redelivery repeats QUEUED, with the place it holds now.
    let again = trigger(&app, "c2").await;
    assert!(again.duplicate_trigger);
    assert_eq!(
        (again.outcome(), again.queue_position),
        (pb::AutoAssignOutcome::Queued, Some(2))
    );

    // Leaving the queue: assigned by hand, or resolved.
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "c2".into(),
                assignee_id: "admin".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    client
        .resolve_conversation(as_actor(
            "admin",
            pb::ResolveConversationRequest {
                conversation_id: "c3".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(waiting(&app).await, vec!["c1", "c4", "c5"]);

    // With auto-assignment off the queue holds, even when someone becomes available.
    client
        .update_inbox_settings(as_actor(
            "admin",
            pb::UpdateInboxSettingsRequest {
                auto_assign_enabled: Some(false),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    app.set_availability("org-a", pb::Availability::Available)
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(waiting(&app).await, vec!["c1", "c4", "c5"]);
    // Switched on, it drains oldest first.
    client
        .update_inbox_settings(as_actor(
            "admin",
            pb::UpdateInboxSettingsRequest {
                auto_assign_enabled: Some(true),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    until_waiting(&app, 0).await;
    assert_eq!(
        auto_assigned_in_order(&app).await,
        vec![
            ("c1".into(), "org-a".into()),
            ("c4".into(), "org-a".into()),
            ("c5".into(), "org-a".into())
        ]
    );
    assert!(waiting(&app).await.is_empty());
    // Entering and leaving the queue are history.
    use pb::AssignmentAction as A;
    let actions = |events: Vec<pb::AssignmentEvent>| {
        let mut actions: Vec<A> = events.iter().map(|e| e.action()).collect();
        actions.sort_by_key(|a| *a as i32);
        actions
    };
    assert_eq!(
        actions(app.history("c1").await),
        vec![A::Assign, A::Queued, A::LeftQueue]
    );
    assert_eq!(
        actions(app.history("c3").await),
        vec![A::Resolve, A::Queued, A::LeftQueue]
    );
    // Organizers see only what they may view; the queue is not for unknown actors.
    expect_code(
        client
            .list_waiting_conversations(as_actor("ghost", Default::default()))
            .await,
        Code::Unauthenticated,
    );
}

/// 50 waiting; an organizer becomes AVAILABLE on replica 1 while capacity frees on replica 2: each
/// conversation is assigned once, in queue order, within capacity, and history equals state.
#[tokio::test]
async fn a_drain_from_two_replicas_at_once_assigns_each_waiting_conversation_once_in_order() {
    let app = campaign(
        &["o1", "o2"],
        pb::UpdateInboxSettingsRequest {
            default_capacity: Some(25),
            ..Default::default()
        },
    )
    .await;
    let other = app.replica().await;
    // o2 is available but full: 25 conversations given by hand.
    for i in 0..25 {
        let id = format!("held-{i:02}");
        app.conversation(&id, &[]).await;
        app.assignments()
            .await
            .assign_conversation(as_actor(
                "admin",
                pb::AssignConversationRequest {
                    conversation_id: id,
                    assignee_id: "o2".into(),
                    expected_version: None,
                },
            ))
            .await
            .unwrap();
    }
    app.set_availability("o2", pb::Availability::Available)
        .await;
    let queued: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
    for id in &queued {
        assert_eq!(
            trigger(&app, id).await.outcome(),
            pb::AutoAssignOutcome::Queued
        );
    }
    let (on_one, on_two) = tokio::join!(
        app.set_availability("o1", pb::Availability::Available),
        async {
            other
                .assignments()
                .await
                .resolve_conversation(as_actor(
                    "admin",
                    pb::ResolveConversationRequest {
                        conversation_id: "held-00".into(),
                    },
                ))
                .await
                .unwrap();
        }
    );
    let ((), ()) = (on_one, on_two);
    // o1 takes 25, o2 the one freed: the first 26 of the queue, in order; 24 wait.
    until_waiting(&app, 24).await;
    let assigned = auto_assigned_in_order(&app).await;
    let ids: Vec<&str> = assigned.iter().map(|(c, _)| c.as_str()).collect();
    let expected: Vec<&str> = queued[..26].iter().map(String::as_str).collect();
    assert_eq!(ids, expected, "assigned once each, oldest first");
    let per: HashMap<&str, usize> = assigned.iter().fold(HashMap::new(), |mut m, (_, to)| {
        *m.entry(to.as_str()).or_default() += 1;
        m
    });
    assert_eq!(per.get("o1"), Some(&25));
    assert_eq!(per.get("o2"), Some(&1));
    assert_eq!(waiting(&app).await, queued[26..].to_vec());
    for (conversation, to) in &assigned {
        assert_eq!(
            app.stored(conversation).await.0.as_deref(),
            Some(to.as_str())
        );
    }
}

/// A replica that died between a freeing commit and its drain: the sweep places what waits.
#[tokio::test]
async fn the_sweep_drains_what_no_event_drained() {
    let app = campaign(&["o1"], Default::default()).await;
    assert_eq!(
        trigger(&app, "c1").await.outcome(),
        pb::AutoAssignOutcome::Queued
    );
    // o1 becomes available behind the service's back: no drain is asked for.
    sqlx::query("UPDATE users SET availability = 'AVAILABLE' WHERE user_id = 'o1'")
        .execute(app.store.pool())
        .await
        .unwrap();
    until_waiting(&app, 0).await;
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o1"));
}

/// A history event: conversation, action, to whom, source.
type Event = (String, String, Option<String>, String);

/// 3 replicas, 3 organizers with capacity 5, 200 concurrent triggers while other callers resolve and
/// unassign at random: auto-assignment never takes an organizer above capacity at any point of history,
/// nothing is assigned twice, what could be placed is placed, and history equals state.
#[tokio::test]
async fn capacity_holds_on_every_prefix_of_history_across_replicas() {
    const ORGS: [&str; 3] = ["o1", "o2", "o3"];
    let app = campaign(
        &ORGS,
        pb::UpdateInboxSettingsRequest {
            default_capacity: Some(5),
            ..Default::default()
        },
    )
    .await;
    for org in ORGS {
        app.set_availability(org, pb::Availability::Available).await;
    }
    let replicas = [app.replica().await, app.replica().await];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut client = match i % 3 {
            0 => app.assignments().await,
            n => replicas[n - 1].assignments().await,
        };
        tasks.push(tokio::spawn(async move {
            client
                .auto_assign_conversation(trigger_request(&format!("c{i:03}")))
                .await
                .unwrap()
                .into_inner()
        }));
    }
    // Meanwhile, others free room at random (a fixed-seed walk, so a failure replays).
    let mut freer = replicas[0].assignments().await;
    let mut seed = 7u64;
    for round in 0..60 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let id = format!("c{:03}", (seed >> 33) % 200);
        let freed = if round % 2 == 0 {
            freer
                .resolve_conversation(as_actor(
                    "admin",
                    pb::ResolveConversationRequest {
                        conversation_id: id,
                    },
                ))
                .await
                .map(|_| ())
        } else {
            freer
                .unassign_conversation(as_actor(
                    "admin",
                    pb::UnassignConversationRequest {
                        return_to_queue: false,
                        conversation_id: id,
                        expected_version: None,
                    },
                ))
                .await
                .map(|_| ())
        };
        // Not created yet is fine: the trigger has not arrived.
        if let Err(status) = freed {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for task in tasks {
        let reply = task.await.unwrap();
        assert!(matches!(
            reply.outcome(),
            pb::AutoAssignOutcome::Assigned | pb::AutoAssignOutcome::Queued
        ));
    }
    // Let the drains settle: nothing that could be placed is left waiting.
    let mut settled = false;
    for _ in 0..300 {
        let waiting = app.count("waiting_conversations").await;
        let full: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT assignee_id FROM conversations \
              WHERE status = 'OPEN' AND assignee_id IS NOT NULL GROUP BY assignee_id HAVING count(*) >= 5) f",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        if waiting == 0 || full == 3 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(settled, "conversations wait while someone has room");

    // Replay history in event order.
    let events: Vec<Event> = sqlx::query_as(
        "SELECT conversation_id, action, to_user_id, source FROM assignment_events \
         WHERE conversation_id IS NOT NULL ORDER BY event_id",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let mut holder: HashMap<String, Option<String>> = HashMap::new();
    let mut resolved: HashSet<String> = HashSet::new();
    let open = |holder: &HashMap<String, Option<String>>, resolved: &HashSet<String>, org: &str| {
        holder
            .iter()
            .filter(|(c, h)| h.as_deref() == Some(org) && !resolved.contains(*c))
            .count()
    };
    for (conversation, action, to, source) in &events {
        match action.as_str() {
            "ASSIGN" => {
                let before = holder.get(conversation).cloned().flatten();
                assert_eq!(before, None, "{conversation} assigned while held");
                let to = to.clone().unwrap();
                if source == "AUTO" {
                    assert!(!resolved.contains(conversation));
                    assert!(
                        open(&holder, &resolved, &to) < 5,
                        "{to} above capacity when given {conversation}"
                    );
                }
                holder.insert(conversation.clone(), Some(to));
            }
            "UNASSIGN" => {
                holder.insert(conversation.clone(), None);
            }
            "RESOLVE" => {
                resolved.insert(conversation.clone());
            }
            "QUEUED" | "LEFT_QUEUE" => {}
            other => panic!("unexpected {other}"),
        }
    }
    for i in 0..200 {
        let id = format!("c{i:03}");
        let (assignee, status, _) = app.stored(&id).await;
        assert_eq!(
            assignee,
            holder.get(&id).cloned().flatten(),
            "history equals state for {id}"
        );
        assert_eq!(status == "RESOLVED", resolved.contains(&id));
    }
}

/// Organizers o1 (AVAILABLE) and o2 (AWAY); going away returns conversations to the queue.
async fn returning_campaign() -> TestApp {
    let app = campaign(
        &["o1", "o2"],
        pb::UpdateInboxSettingsRequest {
            on_unavailable: pb::OnUnavailable::ReturnToQueue.into(),
            ..Default::default()
        },
    )
    .await;
    app.set_availability("o1", pb::Availability::Available)
        .await;
    app
}

#[tokio::test]
async fn an_organizer_going_away_returns_their_open_conversations_to_the_front_of_the_queue() {
    let app = returning_campaign().await;
    app.set_availability("o2", pb::Availability::Available)
        .await;
    for id in ["c1", "c2", "c3", "c4"] {
        assert_eq!(
            trigger(&app, id).await.outcome(),
            pb::AutoAssignOutcome::Assigned
        );
    }
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o1"));
    assert_eq!(app.stored("c3").await.0.as_deref(), Some("o1"));
    // A resolved conversation stays with o1.
    app.assignments()
        .await
        .resolve_conversation(as_actor(
            "admin",
            pb::ResolveConversationRequest {
                conversation_id: "c3".into(),
            },
        ))
        .await
        .unwrap();
    app.set_availability("o1", pb::Availability::Away).await;
    // c1 went back to the queue and on to o2, the one available; history says why.
    until_waiting(&app, 0).await;
    for _ in 0..200 {
        if app.stored("c1").await.0.as_deref() == Some("o2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o2"));
    assert_eq!(app.stored("c3").await.0.as_deref(), Some("o1"));
    let history = app.history("c1").await;
    let unassign = history
        .iter()
        .find(|e| e.action() == pb::AssignmentAction::Unassign)
        .expect("an unassign");
    assert_eq!(unassign.cause, "RETURNED_TO_QUEUE");
    assert_eq!(unassign.source(), pb::AssignmentSource::Auto);
    assert_eq!(unassign.from_user_id.as_deref(), Some("o1"));

    // KEEP: going offline keeps what they hold.
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            on_unavailable: pb::OnUnavailable::Keep.into(),
            ..Default::default()
        },
    )
    .await;
    app.set_availability("o2", pb::Availability::Offline).await;
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o2"));
    assert_eq!(app.count("waiting_conversations").await, 0);
}

/// A queue longer than one drain batch empties when someone comes back, batch after batch, without waiting
/// for the sweep (here hourly).
#[tokio::test]
async fn a_long_queue_drains_at_once_not_a_batch_per_sweep() {
    const QUEUED: i64 = 600;
    let app = TestApp::start_configured(&["--waiting-sweep-interval", "1h"]).await;
    app.admin("admin").await;
    app.organizer("o1").await;
    app.set_availability("o1", pb::Availability::Away).await;
    app.group("admin", "Everyone", &["o1"], true, scope_all())
        .await;
    app.enable_auto_assign().await;
    // The queue filled set-based, as QUEUED triggers would leave it.
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
         SELECT $1, 'c' || lpad(n::text, 4, '0'), 'm' || n FROM generate_series(1, $2) AS n",
    )
    .bind(CAMPAIGN)
    .bind(QUEUED)
    .execute(app.store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO waiting_conversations (campaign_id, conversation_id, position) \
         SELECT campaign_id, conversation_id, row_number() OVER (ORDER BY conversation_id) \
           FROM conversations",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE inbox_settings SET has_waiting = true")
        .execute(app.store.pool())
        .await
        .unwrap();

    app.set_availability("o1", pb::Availability::Available)
        .await;
    until_waiting(&app, 0).await;
    let assigned = auto_assigned_in_order(&app).await;
    assert_eq!(assigned.len() as i64, QUEUED);
    let in_queue_order: Vec<String> = (1..=QUEUED).map(|n| format!("c{n:04}")).collect();
    assert_eq!(
        assigned.into_iter().map(|(c, _)| c).collect::<Vec<_>>(),
        in_queue_order,
        "oldest first"
    );
}

/// An organizer going away while an auto-assign batch runs: the batch holds the campaign's lock and waits to
/// share-lock the organizers, SetAvailability holds the organizer and must return their conversations (and
/// flag the queue on the campaign's row). Both take the campaign's lock first, so neither waits on the other
/// in a cycle: both succeed, no deadlock is detected and nothing is retried.
#[tokio::test]
async fn going_away_while_a_batch_runs_waits_for_it_instead_of_deadlocking() {
    let app = returning_campaign().await;
    assert_eq!(
        trigger(&app, "c1").await.outcome(),
        pb::AutoAssignOutcome::Assigned
    );
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o1"));

    // Something else holds o1's conversation for a moment: going away waits for it, at the step where it
    // returns o1's conversations.
    let (held, holder) = app
        .hold_locks("SELECT 1 FROM conversations WHERE campaign_id = $1 AND conversation_id = 'c1' FOR UPDATE")
        .await;
    let away = {
        let channel = app.channel().await;
        tokio::spawn(async move {
            pb::assignment_service_client::AssignmentServiceClient::new(channel)
                .set_availability(system(
                    CAMPAIGN,
                    pb::SetAvailabilityRequest {
                        user_id: "o1".into(),
                        availability: pb::Availability::Away.into(),
                    },
                ))
                .await
        })
    };
    app.until_blocked_by(holder).await;
    // A trigger meanwhile: its batch takes the campaign's lock (or waits for it) and reads the organizers.
    let next = {
        let channel = app.channel().await;
        tokio::spawn(async move {
            pb::assignment_service_client::AssignmentServiceClient::new(channel)
                .auto_assign_conversation(system(CAMPAIGN, auto_assign_request("c2")))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.rollback().await.unwrap();

    let away = away.await.unwrap().expect("going away succeeds");
    assert!(away.into_inner().changed);
    let next = next
        .await
        .unwrap()
        .expect("the trigger succeeds")
        .into_inner();
    // The batch waited for the campaign's lock, so it saw o1 away, like everyone else: nobody is available.
    assert_eq!(next.outcome(), pb::AutoAssignOutcome::Queued);
    assert_eq!(app.stored("c1").await.0, None, "c1 went back to the queue");
    assert_eq!(waiting(&app).await, ["c1", "c2"], "c1 at the front");
}

/// Unassigns `conversation` as `actor`, handing it back to the queue.
async fn release(
    app: &TestApp,
    actor: &str,
    conversation: &str,
) -> Result<pb::UnassignConversationResponse, tonic::Status> {
    app.assignments()
        .await
        .unassign_conversation(as_actor(
            actor,
            pb::UnassignConversationRequest {
                conversation_id: conversation.into(),
                return_to_queue: true,
                ..Default::default()
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_holder_hands_a_conversation_back_to_the_front_of_the_queue() {
    let app = campaign(&["o1", "o2"], pb::UpdateInboxSettingsRequest::default()).await;
    app.set_availability("o1", pb::Availability::Available)
        .await;
    assert_eq!(trigger(&app, "c1").await.assignee_id.as_deref(), Some("o1"));
    // o2 is away: o1 takes c2 too.
    assert_eq!(
        trigger(&app, "c2").await.outcome(),
        pb::AutoAssignOutcome::Assigned
    );
    app.set_availability("o2", pb::Availability::Available)
        .await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            auto_assign_enabled: Some(false),
            ..Default::default()
        },
    )
    .await;
    trigger(&app, "c4").await;
    // An organizer hands back only their own.
    let refused = expect_code(release(&app, "o2", "c1").await, Code::PermissionDenied);
    assert_eq!(reason(&refused), "ORGANIZER_UNASSIGNS_OWN_ONLY");
    let released = release(&app, "o1", "c1").await.unwrap();
    assert!(released.changed);
    assert_eq!(released.conversation.unwrap().assignee_id, None);
    // With auto-assignment off it waits, at the front (c4 was never queued: auto-assignment was off).
    assert_eq!(waiting(&app).await, vec!["c1"]);
    let events = app.history("c1").await;
    let last = events.last().unwrap();
    assert_eq!(last.action(), pb::AssignmentAction::Queued);
    assert_eq!(last.cause, "RELEASED");
    assert_eq!(last.actor_id.as_deref(), Some("o1"));
    // Switched on, the drain gives it to someone other than who handed it back.
    app.enable_auto_assign().await;
    for _ in 0..100 {
        if waiting(&app).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o2"));
    // An admin releases any; a conversation that is not open is unassigned but does not wait.
    app.resolve_as_admin("c2").await;
    assert!(release(&app, "admin", "c2").await.unwrap().changed);
    assert!(waiting(&app).await.is_empty());
    // Already unassigned: nothing changes.
    assert!(!release(&app, "admin", "c2").await.unwrap().changed);
}

/// A trigger for `conversation` with `priority`.
async fn trigger_with(
    app: &TestApp,
    conversation: &str,
    priority: pb::Priority,
) -> pb::AutoAssignConversationResponse {
    app.assignments()
        .await
        .auto_assign_conversation(system(
            CAMPAIGN,
            pb::AutoAssignConversationRequest {
                priority: priority.into(),
                ..auto_assign_request(conversation)
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn the_queue_drains_by_priority_with_aging_in_the_order_it_lists_and_counts() {
    // One priority level is worth a second of waiting.
    let settings = pb::UpdateInboxSettingsRequest {
        priority_step_seconds: Some(1),
        ..Default::default()
    };
    let app = campaign(&["o1"], settings).await;
    use pb::Priority::*;
    trigger_with(&app, "low", Low).await;
    trigger_with(&app, "normal", Unspecified).await;
    // HIGH overtakes what arrived less than two seconds before it.
    let high = trigger_with(&app, "high", High).await;
    assert_eq!(high.queue_position, Some(1));
    // Aging: URGENT 2.5 s later is 3 s ahead of its arrival, so behind NORMAL (1 s ahead of an earlier
    // arrival) but ahead of LOW; URGENT 3.5 s after LOW comes after it: LOW does not starve.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        trigger_with(&app, "urgent", Urgent).await.queue_position,
        Some(3)
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        trigger_with(&app, "late-urgent", Urgent)
            .await
            .queue_position,
        Some(5)
    );
    let order = ["high", "normal", "urgent", "low", "late-urgent"];
    assert_eq!(waiting(&app).await, order, "listed in queue order");
    let listed = app
        .assignments()
        .await
        .list_waiting_conversations(as_actor(
            "admin",
            pb::ListWaitingConversationsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    let priorities: Vec<pb::Priority> = listed.conversations.iter().map(|w| w.priority()).collect();
    assert_eq!(priorities, [High, Normal, Urgent, Low, Urgent]);
    // The drain assigns in exactly that order.
    app.set_availability("o1", pb::Availability::Available)
        .await;
    for _ in 0..100 {
        if waiting(&app).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let assigned: Vec<String> = sqlx::query_scalar(
        "SELECT conversation_id FROM assignment_events WHERE campaign_id = $1 AND action = 'ASSIGN' \
          ORDER BY seq",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(assigned, order, "drained in queue order");
    // The feed holds what ordered the queue: each QUEUED event's priority, with its time, gives the drain
    // order (the queue's key: the arrival less one step per level).
    let mut queued: Vec<(i64, String)> = app
        .campaign_history(100)
        .await
        .into_iter()
        .filter(|e| e.action() == pb::AssignmentAction::Queued)
        .map(|e| {
            let at = e.occurred_at.unwrap();
            let arrived = at.seconds * 1_000_000 + i64::from(at.nanos / 1000);
            let priority = match e.priority() {
                Low => Priority::Low,
                Normal => Priority::Normal,
                High => Priority::High,
                Urgent => Priority::Urgent,
                Unspecified => panic!("a trigger's QUEUED event carries its priority: {e:?}"),
            };
            (effective_arrival(arrived, priority, 1), e.conversation_id)
        })
        .collect();
    queued.sort();
    let replayed: Vec<&str> = queued.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(replayed, order, "the feed reproduces the drain order");
}
