//! Silence timers across replicas: 1,000 conversations with due times on three replicas (one a separate
//! process, killed with SIGKILL mid-run), replies racing the timers on the other two. Every due time is
//! either cleared by a reply or fires exactly once per holder; no conversation is taken from the organizer
//! whose reply committed; rerouting never returns a conversation to who let it lapse; the history replays to
//! the stored state; and no open conversation is left with nobody and not waiting.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::*;

const CONVERSATIONS: usize = 1000;
/// A campaign beside the harness's own.
const SECOND: &str = "camp-2";
const ORGANIZERS: usize = 10;
const WITHIN_SECONDS: i32 = 2;
/// Lapses of one wait: `max_overdue_reassignments` (2) timed reroutes, then one more, untimed.
const LAPSES_UNANSWERED: usize = 3;
const WORKERS: usize = 16;

fn conversation(n: usize) -> String {
    format!("c{n:04}")
}

fn organizers() -> Vec<String> {
    (0..ORGANIZERS).map(|n| format!("o{n:02}")).collect()
}

#[tokio::test]
async fn timers_fire_exactly_once_across_replicas_and_never_after_a_reply() {
    // 500 repliers read their conversation as "admin" at moments of their own: on a slow machine more than
    // the default 32 of them (128 from one caller) overlap on one replica, which fairness would shed (not what
    // this tests).
    let fast = [
        "--reply-timer-interval",
        "50ms",
        "--waiting-sweep-interval",
        "1s",
        "--max-calls-per-actor",
        "1024",
        "--max-calls-per-caller",
        "1024",
    ];
    let app = TestApp::start_configured(&fast).await;
    app.admin("admin").await;
    let team = organizers();
    for organizer in &team {
        app.organizer(organizer).await;
    }
    let members: Vec<&str> = team.iter().map(String::as_str).collect();
    app.group("admin", "everyone", &members, true, scope_all())
        .await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            auto_assign_enabled: Some(true),
            reply_within_seconds: Some(WITHIN_SECONDS),
            ..Default::default()
        },
    )
    .await;
    let replica = TestApp::start_with(&config(&app.database_url, &fast)).await;
    let addr = format!("127.0.0.1:{}", free_port());
    // Quiet logs: nobody reads its piped stderr, which must not fill up.
    let quiet = [("RUST_LOG", "warn".to_owned())];
    let (mut doomed, doomed_channel) =
        spawn_binary_on(&app.database_url, &addr, &fast, &quiet).await;
    let survivors = [app.channel().await, replica.channel().await];

    // The members write: one trigger each, spread over all three replicas.
    let all = [
        survivors[0].clone(),
        survivors[1].clone(),
        doomed_channel.clone(),
    ];
    run_workers(&all, |channel, n| async move {
        let mut api = AssignmentServiceClient::new(channel);
        let answer = api
            .auto_assign_conversation(system(CAMPAIGN, auto_assign_request(&conversation(n))))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.outcome(), pb::AutoAssignOutcome::Assigned);
    })
    .await;

    // Holders of the even conversations reply at moments spread over the first lapses, on the replicas
    // that survive, while the timers fire; the third replica is killed in the middle.
    let replied: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2300)).await;
        doomed.kill().expect("SIGKILL the third replica");
        doomed.wait().unwrap();
    });
    // Each reply at its own moment (not one after another): 500 tasks, most of them asleep.
    let mut replies = Vec::new();
    for n in (0..CONVERSATIONS).step_by(2) {
        let (record, channel) = (replied.clone(), survivors[n / 2 % 2].clone());
        replies.push(tokio::spawn(async move {
            let delay = (n as u64 * 7919) % 5000;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if let Some(sender) = reply_as_holder(channel, &conversation(n)).await {
                record.lock().await.insert(conversation(n), sender);
            }
        }));
    }
    for reply in replies {
        reply.await.unwrap();
    }
    killer.await.unwrap();

    settle(&app).await;
    let history = history(&app).await;
    let stored = stored_assignees(&app).await;
    let replied = replied.lock().await.clone();
    let mut lapses_unanswered = 0;
    for n in 0..CONVERSATIONS {
        let id = conversation(n);
        let events = history.get(&id).map(Vec::as_slice).unwrap_or_default();
        let lapsed = check_story(&id, events, stored.get(&id).cloned().flatten());
        match replied.get(&id) {
            // The replier holds it still, and never let it lapse.
            Some(sender) => {
                assert_eq!(
                    stored[&id].as_deref(),
                    Some(sender.as_str()),
                    "{id}: {events:?}"
                );
                assert!(
                    !lapsed.contains(sender),
                    "{id} lapsed by its replier: {events:?}"
                );
            }
            None if n % 2 == 1 => {
                assert_eq!(lapsed.len(), LAPSES_UNANSWERED, "{id}: {events:?}");
                lapses_unanswered += 1;
            }
            None => {}
        }
    }
    assert_eq!(lapses_unanswered, CONVERSATIONS / 2);
    assert!(
        replied.len() > CONVERSATIONS / 4,
        "replies won: {}",
        replied.len()
    );
    // Every open conversation has a holder or waits.
    let stranded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM conversations c WHERE c.campaign_id = $1 AND c.status = 'OPEN' \
           AND c.assignee_id IS NULL AND NOT EXISTS (SELECT 1 FROM waiting_conversations w \
               WHERE w.campaign_id = c.campaign_id AND w.conversation_id = c.conversation_id)",
    )
    .bind(CAMPAIGN)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(stranded, 0);
}

/// Every replica keeps an agenda of the timers to fire (`service::agenda`), read whole only at start and once
/// a minute (here: an hour): a timer started through one replica must reach the others' agendas through the
/// commit that started it, even when no event records it, or a replica that dies takes the timer with it.
/// The replica that makes each change is killed at once; the other fires both timers, each in a campaign
/// of its own (an agenda reads a campaign whole): one started by switching timers on
/// (UpdateInboxSettings), one by a member's message to a conversation already held (no assignment, no
/// event).
#[tokio::test]
async fn a_timer_started_through_a_replica_that_dies_fires_on_another_without_waiting_for_a_sweep()
{
    let flags = [
        "--reply-timer-interval",
        "50ms",
        "--agenda-sweep-interval",
        "1h",
    ];
    let app = TestApp::start_configured(&flags).await;
    for campaign in [CAMPAIGN, SECOND] {
        app.team_in(campaign, &["o1"]).await;
        app.enable_auto_assign_in(campaign).await;
    }
    // Long enough that the doomed replica is gone before either is due.
    let within = pb::UpdateInboxSettingsRequest {
        reply_within_seconds: Some(3),
        ..Default::default()
    };
    app.assignments()
        .await
        .update_inbox_settings(as_actor_in(SECOND, "admin", within.clone()))
        .await
        .unwrap();
    app.conversation_in(SECOND, "c2", &[]).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let quiet = [("RUST_LOG", "warn".to_owned())];
    let (mut doomed, channel) = spawn_binary_on(&app.database_url, &addr, &flags, &quiet).await;
    let mut doomed_api = AssignmentServiceClient::new(channel);
    // The other replica reads a campaign's timers after each notification of it: it has read everything
    // before each change below, so that only the change's own notification can tell it of the change.
    let settled = Duration::from_millis(500);

    // c1: assigned and waiting while its campaign's timers are off; switching them on starts its timer.
    let answer = doomed_api
        .auto_assign_conversation(system(CAMPAIGN, auto_assign_request("c1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.outcome(), pb::AutoAssignOutcome::Assigned);
    // c2: held, waiting for nothing; a member's message then starts its wait.
    doomed_api
        .assign_conversation(as_actor_in(
            SECOND,
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "c2".into(),
                assignee_id: "o1".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    tokio::time::sleep(settled).await;
    doomed_api
        .update_inbox_settings(as_actor("admin", within))
        .await
        .unwrap();
    let answer = doomed_api
        .auto_assign_conversation(system(SECOND, auto_assign_request("c2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.outcome(), pb::AutoAssignOutcome::AlreadyAssigned);
    doomed
        .kill()
        .expect("SIGKILL the replica that made the changes");
    doomed.wait().unwrap();

    let mut lapsed: Vec<String> = Vec::new();
    for _ in 0..100 {
        lapsed = sqlx::query_scalar(
            "SELECT DISTINCT conversation_id FROM assignment_events \
              WHERE cause = 'REPLY_OVERDUE' ORDER BY conversation_id",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        if lapsed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lapsed, ["c1", "c2"], "the timers that lapsed within 10 s");
}

/// Runs `job(channel, n)` for every conversation number, `WORKERS` at a time, round-robin over `channels`.
async fn run_workers<F, Fut>(channels: &[Channel], job: F)
where
    F: Fn(Channel, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (next, job, channel) = (
            next.clone(),
            job.clone(),
            channels[worker % channels.len()].clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= CONVERSATIONS {
                    return;
                }
                job(channel.clone(), n).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
}

/// The holder's reply, as the messaging service reports it: read who holds it, report their reply; a timer
/// that fired in between makes it REPLY_NOT_ALLOWED, and the new holder replies. Returns who replied.
async fn reply_as_holder(channel: Channel, id: &str) -> Option<String> {
    let mut api = AssignmentServiceClient::new(channel);
    for attempt in 0..20 {
        let holder = api
            .get_conversation(as_actor(
                "admin",
                pb::GetConversationRequest {
                    conversation_id: id.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .conversation
            .unwrap()
            .assignee_id;
        // Between a lapse and the drain that reroutes it, nobody holds it.
        let Some(holder) = holder else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let reply = pb::RecordReplyRequest {
            conversation_id: id.into(),
            message_id: format!("{id}-reply-{attempt}"),
            sender_id: holder.clone(),
        };
        match api.record_reply(system(CAMPAIGN, reply)).await {
            Ok(_) => return Some(holder),
            Err(status) if status.code() == Code::PermissionDenied => continue,
            Err(status) => panic!("{id}: {status:?}"),
        }
    }
    None
}

/// Waits until no timer is due or pending, the queue is empty and every event is numbered.
async fn settle(app: &TestApp) {
    for _ in 0..600 {
        let (pending, waiting, unnumbered): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM conversations c JOIN inbox_settings s USING (campaign_id) \
                      WHERE c.awaiting_reply_since IS NOT NULL AND c.assignee_id IS NOT NULL \
                        AND c.status = 'OPEN' AND NOT (c.assignee_id = ANY (c.lapsed_by)) \
                        AND s.reply_within_seconds IS NOT NULL), \
                    (SELECT count(*) FROM waiting_conversations), \
                    (SELECT count(*) FROM assignment_events WHERE seq IS NULL)",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        if pending == 0 && waiting == 0 && unnumbered == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the timers never settled");
}

/// Each conversation's events in feed order: (action, from, to, cause).
type Event = (String, Option<String>, Option<String>, Option<String>);

async fn history(app: &TestApp) -> HashMap<String, Vec<Event>> {
    let rows: Vec<(String, Event)> = sqlx::query_as::<
        _,
        (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        ),
    >(
        "SELECT conversation_id, action, from_user_id, to_user_id, cause FROM assignment_events \
          WHERE campaign_id = $1 AND conversation_id IS NOT NULL ORDER BY seq",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|(id, action, from, to, cause)| (id, (action, from, to, cause)))
    .collect();
    let mut by_conversation: HashMap<String, Vec<Event>> = HashMap::new();
    for (id, event) in rows {
        by_conversation.entry(id).or_default().push(event);
    }
    by_conversation
}

async fn stored_assignees(app: &TestApp) -> HashMap<String, Option<String>> {
    sqlx::query_as("SELECT conversation_id, assignee_id FROM conversations WHERE campaign_id = $1")
        .bind(CAMPAIGN)
        .fetch_all(app.store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Replays one conversation's events: each lapse (an UNASSIGN for REPLY_OVERDUE) is its holder's, once;
/// nobody who let it lapse is assigned it again; the replay ends at the stored holder. Returns who lapsed.
fn check_story(id: &str, events: &[Event], stored: Option<String>) -> HashSet<String> {
    let mut holder: Option<String> = None;
    let mut lapsed = HashSet::new();
    for (action, from, to, cause) in events {
        match action.as_str() {
            "ASSIGN" | "REASSIGN" => {
                let to = to.clone().expect("an assignment names its assignee");
                assert!(
                    !lapsed.contains(&to),
                    "{id} went back to {to}, who let it lapse: {events:?}"
                );
                holder = Some(to);
            }
            "UNASSIGN" => {
                assert_eq!(from, &holder, "{id}: {events:?}");
                if cause.as_deref() == Some("REPLY_OVERDUE") {
                    let from = from.clone().unwrap();
                    assert!(
                        lapsed.insert(from),
                        "{id} fired twice for one holder: {events:?}"
                    );
                }
                holder = None;
            }
            _ => {}
        }
    }
    assert_eq!(
        holder, stored,
        "{id}: the history replays to the stored holder: {events:?}"
    );
    lapsed
}
