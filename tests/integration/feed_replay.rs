//! The feed is a serialization of the campaign consistent with every routing decision. Auto-assign
//! triggers, freeing changes (resolve, unassign, reassign), reopens, availability flips and shift schedules
//! (with shifts starting and ending mid-run) run at once on three replicas, with capacities tight enough that who has room keeps changing while batches decide.
//! Replaying the feed in feed order from the known start, every auto assignment goes to whom the routing
//! rules pick on the replayed state, every queued conversation had nobody to go to, drains take the
//! queue in order, and the replay ends in the stored state.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::harness::*;
use replay::{DEFAULT_CAPACITY, ORGANIZERS, Replay};

/// Round robin (the default) in one campaign, balanced in the other; they share the replicas' batches.
const CAMPAIGNS: [(&str, bool); 2] = [("replay-rr", false), ("replay-bal", true)];
const WORKERS_PER_CAMPAIGN: usize = 12;
const OPS_PER_WORKER: usize = 25;

#[tokio::test]
async fn replaying_the_feed_follows_every_routing_decision() {
    let app = TestApp::start().await;
    for (campaign, balanced) in CAMPAIGNS {
        seed(&app, campaign, balanced).await;
        assert_eq!(
            counts(&app, campaign).await,
            (0, 0),
            "setup wrote no events"
        );
    }
    let replicas = [app.replica().await, app.replica().await];
    let channels = [
        app.channel().await,
        replicas[0].channel().await,
        replicas[1].channel().await,
    ];
    // Watching from now, with no event yet, is watching the whole feed.
    let mut feeds = Vec::new();
    for (campaign, _) in CAMPAIGNS {
        feeds.push(read_feed(channels[0].clone(), campaign).await);
    }

    let tally = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let mut workers = Vec::new();
    for (c, (campaign, _)) in CAMPAIGNS.into_iter().enumerate() {
        let known = Arc::new(Mutex::new(Vec::<String>::new()));
        let created = Arc::new(AtomicUsize::new(0));
        for w in 0..WORKERS_PER_CAMPAIGN {
            let client = AssignmentServiceClient::new(channels[(w + c) % 3].clone());
            let worker = Worker {
                client,
                campaign,
                known: known.clone(),
                created: created.clone(),
                tally: tally.clone(),
                rng: Rng(0x5eed + (c * 100 + w) as u64),
            };
            workers.push(tokio::spawn(worker.run()));
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
    eprintln!("operations by outcome: {:?}", tally.lock().unwrap());

    let mut failures = Vec::new();
    for ((campaign, balanced), feed) in CAMPAIGNS.into_iter().zip(&mut feeds) {
        // With auto-assignment off (it takes the campaign's lock: a running batch ends first) nothing more
        // is written; then wait until every event is numbered and read them all in feed order.
        set_enabled(&app, campaign, false).await;
        let total = until_numbered(&app, campaign).await;
        let mut replay = Replay::new(balanced);
        for seq in 1..=total {
            let event = tokio::time::timeout(Duration::from_secs(20), feed.recv())
                .await
                .unwrap_or_else(|_| panic!("{campaign}: the feed delivered {} of {total}", seq - 1))
                .expect("the feed reader runs");
            replay.apply(seq, &event);
        }
        let mismatches = compare_with_stored(&app, campaign, &replay).await;
        eprintln!(
            "{campaign}: {total} events, {} auto assignments, {} shift starts and ends, {} deviations, \
             {} state mismatches",
            replay.auto_assignments,
            replay.shift_changes,
            replay.deviations.len(),
            mismatches.len()
        );
        assert!(
            replay.shift_changes > 0,
            "{campaign}: no shift started or ended"
        );
        if !replay.deviations.is_empty() || !mismatches.is_empty() {
            failures.push(format!(
                "{campaign}: {} deviations from the routing rules, first: {:#?}\n\
                 {} differences between the replay and the stored state, first: {:#?}",
                replay.deviations.len(),
                &replay.deviations[..replay.deviations.len().min(5)],
                mismatches.len(),
                &mismatches[..mismatches.len().min(5)]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the feed is not a serialization of the routing decisions:\n{}",
        failures.join("\n")
    );
}

mod replay;

/// Admin "admin" and the organizers, who may reply to everything; capacities; auto-assignment on.
async fn seed(app: &TestApp, campaign: &str, balanced: bool) {
    app.team_in(campaign, &ORGANIZERS).await;
    let mut client = app.assignments().await;
    let mode = if balanced {
        pb::RoutingMode::Balanced
    } else {
        pb::RoutingMode::RoundRobin
    };
    let settings = pb::UpdateInboxSettingsRequest {
        default_capacity: Some(DEFAULT_CAPACITY as i32),
        routing_mode: mode.into(),
        ..Default::default()
    };
    client
        .update_inbox_settings(as_actor_in(campaign, "admin", settings))
        .await
        .unwrap();
    let capacity = pb::SetCapacityRequest {
        user_id: "org-c".into(),
        capacity: Some(replay::ORG_C_CAPACITY as i32),
    };
    client
        .set_capacity(as_actor_in(campaign, "admin", capacity))
        .await
        .unwrap();
    set_enabled(app, campaign, true).await;
}

async fn set_enabled(app: &TestApp, campaign: &str, on: bool) {
    let settings = pb::UpdateInboxSettingsRequest {
        auto_assign_enabled: Some(on),
        ..Default::default()
    };
    app.assignments()
        .await
        .update_inbox_settings(as_actor_in(campaign, "admin", settings))
        .await
        .unwrap();
}

/// The campaign's events, and how many of them are not numbered yet.
async fn counts(app: &TestApp, campaign: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE seq IS NULL) FROM assignment_events WHERE campaign_id = $1",
    )
    .bind(campaign)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

/// Waits until every event of the campaign is numbered (the writers' sequencer runs, or the sweep's).
async fn until_numbered(app: &TestApp, campaign: &str) -> usize {
    for _ in 0..300 {
        let (total, unnumbered) = counts(app, campaign).await;
        if unnumbered == 0 {
            return total as usize;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{campaign}: events stayed unnumbered");
}

/// Reads the campaign's feed from now as the admin, resuming from the last cursor when cut off as too
/// slow (the reader falls behind while the workload runs).
async fn read_feed(
    channel: Channel,
    campaign: &'static str,
) -> mpsc::UnboundedReceiver<pb::AssignmentEvent> {
    let mut client = AssignmentServiceClient::new(channel);
    let watch = |cursor: String| pb::WatchAssignmentEventsRequest {
        cursor,
        ..Default::default()
    };
    let request = as_actor_in(campaign, "admin", watch(String::new()));
    let mut stream = client
        .watch_assignment_events(request)
        .await
        .unwrap()
        .into_inner();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut cursor = String::new();
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    let event = message.event.unwrap();
                    cursor = event.cursor.clone();
                    if tx.send(event).is_err() {
                        return;
                    }
                }
                Err(status) if status.code() == Code::ResourceExhausted && !cursor.is_empty() => {
                    let request = as_actor_in(campaign, "admin", watch(cursor.clone()));
                    stream = client
                        .watch_assignment_events(request)
                        .await
                        .unwrap()
                        .into_inner();
                }
                other => panic!("{campaign}: the feed ended: {other:?}"),
            }
        }
    });
    rx
}

/// Differences between the replay's end and what the database holds.
async fn compare_with_stored(app: &TestApp, campaign: &str, replay: &Replay) -> Vec<String> {
    let mut mismatches = Vec::new();
    let stored: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT conversation_id, assignee_id, status FROM conversations WHERE campaign_id = $1",
    )
    .bind(campaign)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    if stored.len() != replay.conversations.len() {
        let (held, replayed) = (stored.len(), replay.conversations.len());
        mismatches.push(format!("{held} conversations stored, {replayed} replayed"));
    }
    for (id, assignee, status) in stored {
        let stored = replay::Conversation {
            open: status == "OPEN",
            assignee,
        };
        let replayed = replay.conversations.get(&id);
        if replayed != Some(&stored) {
            mismatches.push(format!("{id}: stored {stored:?}, replayed {replayed:?}"));
        }
    }
    let away: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM users WHERE campaign_id = $1 AND availability <> 'AVAILABLE' ORDER BY user_id",
    )
    .bind(campaign)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let mut replayed_away: Vec<String> = replay.away.iter().cloned().collect();
    replayed_away.sort();
    if away != replayed_away {
        mismatches.push(format!("away: stored {away:?}, replayed {replayed_away:?}"));
    }
    let waiting: VecDeque<String> = sqlx::query_scalar(
        "SELECT conversation_id FROM waiting_conversations WHERE campaign_id = $1 ORDER BY position",
    )
    .bind(campaign)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
    .into();
    if waiting != replay.queue {
        mismatches.push(format!(
            "queue: stored {waiting:?}, replayed {:?}",
            replay.queue
        ));
    }
    // The loads routing reads (folded counts plus pending changes) against the open conversations held.
    let loads: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT user_id, sum(kept)::bigint, sum(held)::bigint FROM ( \
           SELECT user_id, open AS kept, 0 AS held FROM organizer_loads WHERE campaign_id = $1 \
           UNION ALL SELECT user_id, delta, 0 FROM organizer_load_changes WHERE campaign_id = $1 \
           UNION ALL SELECT assignee_id, 0, 1 FROM conversations \
                      WHERE campaign_id = $1 AND status = 'OPEN' AND assignee_id IS NOT NULL) AS l \
         GROUP BY user_id HAVING sum(kept) <> sum(held)",
    )
    .bind(campaign)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    for (user, kept, held) in loads {
        mismatches.push(format!(
            "{user}: load {kept} kept, {held} open conversations held"
        ));
    }
    mismatches
}

fn as_admin<T>(campaign: &str, message: T) -> tonic::Request<T> {
    as_actor_in(campaign, "admin", message)
}

/// splitmix64: a seeded, dependency-free choice of operations.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// One of a campaign's concurrent callers: the flow builder, the admin or the presence tracker, at random.
struct Worker {
    client: AssignmentServiceClient<Channel>,
    campaign: &'static str,
    /// Conversations created so far (their trigger answered).
    known: Arc<Mutex<Vec<String>>>,
    created: Arc<AtomicUsize>,
    tally: Arc<Mutex<HashMap<String, usize>>>,
    rng: Rng,
}

impl Worker {
    async fn run(mut self) {
        for _ in 0..OPS_PER_WORKER {
            let (op, result) = self.step().await;
            let outcome =
                result.map_or_else(|status| format!("{:?}", status.code()), |()| "OK".into());
            let broken = ["Internal", "Unknown"].contains(&outcome.as_str());
            assert!(!broken, "{} {op}: {outcome}", self.campaign);
            let mut tally = self.tally.lock().unwrap();
            *tally.entry(format!("{op} {outcome}")).or_default() += 1;
        }
    }

    /// A random conversation created so far.
    fn some_conversation(&mut self) -> Option<String> {
        let known = self.known.lock().unwrap().clone();
        (!known.is_empty()).then(|| known[self.rng.below(known.len())].clone())
    }

    /// One operation, by the flow builder (40%), the admin (52%), the presence tracker (4%) or the
    /// scheduler (4%).
    async fn step(&mut self) -> (&'static str, Result<(), Status>) {
        let (campaign, roll) = (self.campaign, self.rng.below(100));
        let conversation_id = match self.some_conversation() {
            Some(id) if roll >= 40 => id,
            _ => return ("trigger", self.trigger().await),
        };
        let client = &mut self.client;
        match roll {
            40..60 => {
                let request = pb::ResolveConversationRequest { conversation_id };
                let result = client
                    .resolve_conversation(as_admin(campaign, request))
                    .await;
                ("resolve", result.map(drop))
            }
            60..72 => {
                let request = pb::UnassignConversationRequest {
                    return_to_queue: false,
                    conversation_id,
                    expected_version: None,
                };
                let result = client
                    .unassign_conversation(as_admin(campaign, request))
                    .await;
                ("unassign", result.map(drop))
            }
            72..87 => {
                let request = pb::ReopenConversationRequest { conversation_id };
                let result = client
                    .reopen_conversation(as_admin(campaign, request))
                    .await;
                ("reopen", result.map(drop))
            }
            87..92 => {
                // Now and then to the admin, who does not move the rotation.
                let to = ORGANIZERS.get(self.rng.below(6)).unwrap_or(&"admin");
                let assignee_id = to.to_string();
                let request = pb::ReassignConversationRequest {
                    conversation_id,
                    assignee_id,
                    expected_version: None,
                };
                let result = client
                    .reassign_conversation(as_admin(campaign, request))
                    .await;
                ("reassign", result.map(drop))
            }
            96.. => ("shift", self.shift().await),
            _ => {
                let user_id = ORGANIZERS[self.rng.below(ORGANIZERS.len())].to_string();
                let away = self.rng.below(10) < 4;
                let availability = if away {
                    pb::Availability::Away
                } else {
                    pb::Availability::Available
                };
                let request = pb::SetAvailabilityRequest {
                    user_id,
                    availability: availability.into(),
                };
                let result = client.set_availability(system(campaign, request)).await;
                ("availability", result.map(drop))
            }
        }
    }

    /// A random organizer's shift schedule: none (always on shift), none worked (off shift), or a window
    /// of one or two seconds starting within two, so shifts start and end while batches decide.
    async fn shift(&mut self) -> Result<(), Status> {
        let user_id = ORGANIZERS[self.rng.below(ORGANIZERS.len())].to_string();
        let campaign = self.campaign;
        let roll = self.rng.below(3);
        if roll == 0 {
            let request = pb::DeleteShiftScheduleRequest { user_id };
            let result = self
                .client
                .delete_shift_schedule(system(campaign, request))
                .await;
            return result.map(drop);
        }
        let exceptions = if roll == 1 {
            Vec::new()
        } else {
            let now = jiff::Timestamp::now();
            let start = now
                .checked_add(jiff::SignedDuration::from_millis(
                    self.rng.below(2000) as i64
                ))
                .unwrap();
            let end = start
                .checked_add(jiff::SignedDuration::from_millis(
                    1000 + self.rng.below(1000) as i64,
                ))
                .unwrap();
            let local = |t: jiff::Timestamp| t.to_zoned(jiff::tz::TimeZone::UTC);
            vec![pb::ShiftException {
                date: local(start).date().to_string(),
                off: false,
                start: local(start).time().strftime("%H:%M:%S").to_string(),
                end: local(end).time().strftime("%H:%M:%S").to_string(),
            }]
        };
        let request = pb::SetShiftScheduleRequest {
            user_id,
            weekly: vec![],
            exceptions,
        };
        let result = self
            .client
            .set_shift_schedule(system(campaign, request))
            .await;
        result.map(drop)
    }

    /// The flow builder's trigger for a new conversation, retried while the service sheds load.
    async fn trigger(&mut self) -> Result<(), Status> {
        let id = format!("c{:04}", self.created.fetch_add(1, Ordering::SeqCst));
        for _ in 0..50 {
            let request = pb::AutoAssignConversationRequest {
                priority: Default::default(),
                conversation_id: id.clone(),
                trigger_id: format!("t-{id}"),
                member_id: format!("m-{id}"),
                member_tags: vec![],
            };
            match self
                .client
                .auto_assign_conversation(system(self.campaign, request))
                .await
            {
                Ok(_) => {
                    self.known.lock().unwrap().push(id);
                    return Ok(());
                }
                Err(status)
                    if matches!(status.code(), Code::ResourceExhausted | Code::Unavailable) =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => return Err(status),
            }
        }
        panic!("{}: the trigger for {id} was never taken", self.campaign);
    }
}
