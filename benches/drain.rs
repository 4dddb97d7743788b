//! Draining a campaign's waiting queue when its organizers come back, next to PostgreSQL doing the same
//! assignments set-based.
//!
//! `cargo bench --bench drain`: a campaign with auto-assignment on and 10 organizers who may reply to
//! everything, all AWAY, gets DRAIN_CONVERSATIONS (default 10,000) conversations in its waiting queue; then
//! the 10 organizers (no capacity limit) become AVAILABLE through SetAvailability, one after another as a
//! presence tracker would send them, and the bench polls `waiting_conversations` until the queue is empty.
//! It reports the time from the first SetAvailability to the empty queue and conversations drained per
//! second, beside set-based SQL doing the same assignment work (assignments round-robin over the 10
//! organizers, `auto` history events, the queue emptied, the cursor moved) straight on PostgreSQL in the
//! same run: in one statement, and in statements of 256 (the service's drain batch) one transaction each.
//!
//! DRAIN_SEED picks how the queue is filled: `grpc` (the default: AutoAssignConversation from 64 concurrent
//! callers, coalesced by the server, each answered QUEUED) or `sql` (rows inserted set-based into
//! `conversations` and `waiting_conversations`, with `inbox_settings.has_waiting` set). The server runs in
//! this process with its default flags (waiting sweep every 5 s). Uses DATABASE_URL when set, otherwise a
//! private, durable PostgreSQL under target/. DRAIN_TIMEOUT_SECONDS (default 900) bounds the wait.
//!
//! Then the latency of one drain: 10 organizers with capacity 1, all full, 200 conversations waiting; each
//! ResolveConversation frees one place, and the bench times until the first waiting conversation holds it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::store::Store;
use common::{
    BenchSchema, assignment_spread, connect, database, organizer_ids, seed_campaign,
    set_availability, settle, start_server, update_settings, with_campaign,
};
use tonic::transport::Channel;

const ORGANIZERS: usize = 10;
/// Concurrent AutoAssignConversation callers when the queue is filled through gRPC.
const SEED_CALLERS: usize = 64;
/// The service's drain batch (`DRAIN_LIMIT` in `service::auto_assign`), for the batched SQL baseline.
const SQL_BATCH: i64 = 256;
/// How often the queue's length is read while it drains.
const POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, PartialEq)]
enum Seed {
    Grpc,
    Sql,
}

fn conversation_id(campaign: &str, n: usize) -> String {
    format!("{campaign}-{n:06}")
}

/// Fills the campaign's queue through AutoAssignConversation; every trigger must be answered QUEUED.
async fn seed_through_grpc(channel: &Channel, campaign: &str, count: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..SEED_CALLERS {
        let next = next.clone();
        let campaign = campaign.to_owned();
        let mut client = AssignmentServiceClient::new(channel.clone());
        callers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let conversation = conversation_id(&campaign, n);
                let request = pb::AutoAssignConversationRequest {
                    priority: Default::default(),
                    trigger_id: format!("trigger-{conversation}"),
                    member_id: format!("member-{conversation}"),
                    conversation_id: conversation,
                    member_tags: vec![],
                };
                let reply = client
                    .auto_assign_conversation(with_campaign(&campaign, None, request))
                    .await
                    .expect("auto-assign")
                    .into_inner();
                assert_eq!(reply.outcome(), pb::AutoAssignOutcome::Queued);
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
}

/// Fills the campaign's queue set-based: the conversations, their places in the queue (in id order), and
/// the campaign's flag that conversations may wait.
async fn seed_through_sql(store: &Store, campaign: &str, count: usize) {
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
         SELECT $1, $1 || '-' || lpad(n::text, 6, '0'), 'member-' || n FROM generate_series(0, $2 - 1) AS n",
    )
    .bind(campaign)
    .bind(count as i64)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO waiting_conversations (campaign_id, conversation_id, position) \
         SELECT campaign_id, conversation_id, row_number() OVER (ORDER BY conversation_id) \
           FROM conversations WHERE campaign_id = $1",
    )
    .bind(campaign)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE inbox_settings SET has_waiting = true WHERE campaign_id = $1")
        .bind(campaign)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn waiting(store: &Store, campaign: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM waiting_conversations WHERE campaign_id = $1")
        .bind(campaign)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// The assignment work of a drain, straight on PostgreSQL: the first `limit` waiting conversations of the
/// campaign go round-robin (in queue order) to its active, AVAILABLE organizers who may reply to every
/// conversation, after the organizer last auto-assigned; with their `auto` history events, out of the
/// queue, the cursor moved and the flag cleared when the queue is empty. One statement; returns how many it
/// assigned.
const SQL_DRAIN: &str = "\
WITH settings AS ( \
       SELECT last_auto_assignee_id AS last FROM inbox_settings WHERE campaign_id = $1 FOR UPDATE), \
     organizers AS ( \
       SELECT u.user_id, \
              (row_number() OVER (ORDER BY (u.user_id COLLATE \"C\") > coalesce(s.last, '') DESC, \
                                           u.user_id COLLATE \"C\") - 1) AS k, \
              count(*) OVER () AS total \
         FROM users u, settings s \
        WHERE u.campaign_id = $1 AND u.role = 'ORGANIZER' AND u.active AND u.availability = 'AVAILABLE' \
          AND EXISTS (SELECT 1 FROM access_group_organizers m \
                        JOIN access_groups g ON g.campaign_id = m.campaign_id \
                                            AND g.access_group_id = m.access_group_id \
                       WHERE m.campaign_id = u.campaign_id AND m.user_id = u.user_id AND g.can_reply \
                         AND g.scope_all)), \
     queue AS ( \
       SELECT w.conversation_id, row_number() OVER (ORDER BY w.position) - 1 AS n FROM ( \
         SELECT conversation_id, position FROM waiting_conversations WHERE campaign_id = $1 \
          ORDER BY position LIMIT $2) AS w), \
     picks AS ( \
       SELECT q.conversation_id, q.n, o.user_id FROM queue q JOIN organizers o ON o.k = q.n % o.total), \
     assigned AS ( \
       UPDATE conversations c \
          SET assignee_id = p.user_id, assigned_at = now(), version = c.version + 1, updated_at = now() \
         FROM picks p \
        WHERE c.campaign_id = $1 AND c.conversation_id = p.conversation_id AND c.assignee_id IS NULL \
       RETURNING c.conversation_id, c.assignee_id, p.n), \
     loads AS ( \
       INSERT INTO organizer_load_changes (campaign_id, user_id, delta) \
       SELECT $1, assignee_id, count(*) FROM assigned GROUP BY assignee_id), \
     events AS ( \
       INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, source, stamp) \
       SELECT $1, conversation_id, 'ASSIGN', assignee_id, 'AUTO', 0 FROM assigned ORDER BY n), \
     drained AS ( \
       DELETE FROM waiting_conversations w USING assigned a \
        WHERE w.campaign_id = $1 AND w.conversation_id = a.conversation_id), \
     moved AS ( \
       UPDATE inbox_settings \
          SET last_auto_assignee_id = coalesce( \
                (SELECT assignee_id FROM assigned ORDER BY n DESC LIMIT 1), last_auto_assignee_id), \
              has_waiting = (SELECT count(*) FROM assigned) = $2 \
        WHERE campaign_id = $1) \
SELECT count(*) FROM assigned";

/// Runs [`SQL_DRAIN`] `limit` conversations at a time, one transaction each, until the queue is empty;
/// returns the seconds it took.
async fn sql_drain(store: &Store, campaign: &str, count: usize, limit: i64) -> f64 {
    let started = Instant::now();
    let mut assigned = 0;
    loop {
        let mut tx = store.pool().begin().await.unwrap();
        let n: i64 = sqlx::query_scalar(SQL_DRAIN)
            .bind(campaign)
            .bind(limit)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assigned += n as usize;
        if n < limit || assigned >= count {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(assigned, count, "the SQL drain assigned every conversation");
    seconds
}

/// Where the queue stood as it drained: (seconds since the first SetAvailability, conversations waiting).
struct Progress(Vec<(f64, i64)>);

impl Progress {
    /// The queue's length at about each of `at` seconds (the last reading before it).
    fn at(&self, at: &[f64]) -> String {
        at.iter()
            .filter_map(|&t| {
                self.0
                    .iter()
                    .take_while(|(s, _)| *s <= t)
                    .last()
                    .map(|(_, n)| format!("{t:.0} s: {n}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("DRAIN_CONVERSATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let seed = match std::env::var("DRAIN_SEED").as_deref() {
        Ok("sql") => Seed::Sql,
        Ok("grpc") | Err(_) => Seed::Grpc,
        Ok(other) => panic!("DRAIN_SEED: grpc or sql, not {other:?}"),
    };
    let timeout = Duration::from_secs(
        std::env::var("DRAIN_TIMEOUT_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(900),
    );
    let (server_url, _cluster) = database();
    let bench_schema = BenchSchema::create(&server_url, "bench_drain").await;
    let url = bench_schema.url.clone();
    let addr = start_server(&url, &[]).await;
    let channel = connect(&addr).await;
    let store = Store::connect(&url, 2, Duration::from_secs(120))
        .await
        .unwrap();
    let organizers = organizer_ids(ORGANIZERS);

    // The service's campaign: everyone AWAY, then the queue filled.
    let campaign = "drain";
    seed_campaign(&channel, campaign, ORGANIZERS).await;
    for organizer in &organizers {
        set_availability(&channel, campaign, organizer, pb::Availability::Away).await;
    }
    let seeding = Instant::now();
    let how = match seed {
        Seed::Grpc => {
            seed_through_grpc(&channel, campaign, count).await;
            format!("AutoAssignConversation from {SEED_CALLERS} concurrent callers, each QUEUED")
        }
        Seed::Sql => {
            seed_through_sql(&store, campaign, count).await;
            "set-based INSERTs into conversations and waiting_conversations".to_string()
        }
    };
    let seed_seconds = seeding.elapsed().as_secs_f64();
    assert_eq!(waiting(&store, campaign).await, count as i64);
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();

    println!(
        "Draining {count} waiting conversations over {ORGANIZERS} organizers as they become AVAILABLE\n"
    );
    println!(
        "queue filled through {how}: {seed_seconds:.1} s ({:.0} conversations/s)\n",
        count as f64 / seed_seconds
    );

    settle(&store).await;
    let started = Instant::now();
    let mut progress = vec![(0.0, count as i64)];
    for organizer in &organizers {
        set_availability(&channel, campaign, organizer, pb::Availability::Available).await;
    }
    let all_available = started.elapsed().as_secs_f64();
    let service_seconds = loop {
        let left = waiting(&store, campaign).await;
        let now = started.elapsed();
        progress.push((now.as_secs_f64(), left));
        if left == 0 {
            break now.as_secs_f64();
        }
        assert!(
            now < timeout,
            "{left} conversations still waiting after {timeout:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    let progress = Progress(progress);

    // The baselines' campaigns: the same organizers, AVAILABLE; their queues filled set-based; auto-assignment
    // off, so that the server's waiting sweep leaves them to the SQL.
    let (sql_one, sql_batched) = ("drain-sql-one", "drain-sql-256");
    for baseline in [sql_one, sql_batched] {
        seed_campaign(&channel, baseline, ORGANIZERS).await;
        update_settings(
            &channel,
            baseline,
            pb::UpdateInboxSettingsRequest {
                auto_assign_enabled: Some(false),
                ..Default::default()
            },
        )
        .await;
        seed_through_sql(&store, baseline, count).await;
    }
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    settle(&store).await;
    let one_seconds = sql_drain(&store, sql_one, count, count as i64).await;
    settle(&store).await;
    let batched_seconds = sql_drain(&store, sql_batched, count, SQL_BATCH).await;

    let sql_rate = count as f64 / one_seconds;
    println!(
        "| path | conversations | seconds | conversations/s | x set-based SQL, one statement |"
    );
    println!("|---|---|---|---|---|");
    for (what, seconds) in [
        (
            format!(
                "service: {ORGANIZERS} SetAvailability through gRPC, then until the queue is empty"
            ),
            service_seconds,
        ),
        ("set-based SQL, one statement".to_string(), one_seconds),
        (
            format!("set-based SQL, {SQL_BATCH} per statement, a transaction each"),
            batched_seconds,
        ),
    ] {
        let rate = count as f64 / seconds;
        println!(
            "| {what} | {count} | {seconds:.2} | {rate:.0} | {:.3} |",
            rate / sql_rate
        );
    }

    let marks: Vec<f64> = [1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 240.0]
        .into_iter()
        .filter(|&t| t < service_seconds)
        .collect();
    let waiting_at = if marks.is_empty() {
        String::new()
    } else {
        format!("still waiting at {}; ", progress.at(&marks))
    };
    println!(
        "\nservice: all {ORGANIZERS} AVAILABLE after {all_available:.2} s; {waiting_at}empty at \
         {service_seconds:.1} s"
    );

    // Every conversation assigned once, by auto-assignment, with its history event.
    for campaign in [campaign, sql_one, sql_batched] {
        let (unassigned, events): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM conversations WHERE campaign_id = $1 AND assignee_id IS NULL), \
                    (SELECT count(*) FROM assignment_events \
                      WHERE campaign_id = $1 AND action = 'ASSIGN' AND source = 'AUTO')",
        )
        .bind(campaign)
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!((unassigned, events), (0, count as i64), "{campaign}");
        let (min, max) = assignment_spread(&store, campaign).await;
        println!("- {campaign}: per-organizer assignments between {min} and {max}");
    }
    freeing_to_assignment(&channel).await;
    store.pool().close().await;
    bench_schema.drop_schema().await;
}

/// Conversations waiting behind a full team in the freeing-commit benchmark, each drained by one resolve.
const FREEINGS: usize = 200;

/// One auto-assign trigger of `campaign`: its outcome.
async fn trigger(
    client: &mut AssignmentServiceClient<Channel>,
    campaign: &str,
    n: usize,
) -> pb::AutoAssignOutcome {
    let conversation = conversation_id(campaign, n);
    client
        .auto_assign_conversation(with_campaign(
            campaign,
            None,
            pb::AutoAssignConversationRequest {
                priority: Default::default(),
                trigger_id: format!("trigger-{conversation}"),
                member_id: format!("member-{conversation}"),
                conversation_id: conversation,
                member_tags: vec![],
            },
        ))
        .await
        .expect("auto-assign")
        .into_inner()
        .outcome()
}

/// Time from a freeing commit (ResolveConversation answered) to the assignment of the conversation waiting
/// first, seen by GetConversation polled every millisecond: 10 organizers with capacity 1, all full, and
/// FREEINGS conversations waiting; each resolve frees one place, which the event-driven drain fills.
async fn freeing_to_assignment(channel: &Channel) {
    let campaign = "drain-latency";
    seed_campaign(channel, campaign, ORGANIZERS).await;
    update_settings(
        channel,
        campaign,
        pb::UpdateInboxSettingsRequest {
            default_capacity: Some(1),
            ..Default::default()
        },
    )
    .await;
    let mut client = AssignmentServiceClient::new(channel.clone());
    let mut assigned = std::collections::VecDeque::new();
    for n in 0..ORGANIZERS + FREEINGS {
        let outcome = trigger(&mut client, campaign, n).await;
        if n < ORGANIZERS {
            assert_eq!(outcome, pb::AutoAssignOutcome::Assigned);
            assigned.push_back(n);
        } else {
            assert_eq!(outcome, pb::AutoAssignOutcome::Queued);
        }
    }
    let mut latencies = Vec::with_capacity(FREEINGS);
    for next in ORGANIZERS..ORGANIZERS + FREEINGS {
        let freed = assigned.pop_front().expect("someone holds a conversation");
        client
            .resolve_conversation(with_campaign(
                campaign,
                Some("admin"),
                pb::ResolveConversationRequest {
                    conversation_id: conversation_id(campaign, freed),
                },
            ))
            .await
            .expect("resolve");
        let resolved = Instant::now();
        loop {
            let conversation = client
                .get_conversation(with_campaign(
                    campaign,
                    Some("admin"),
                    pb::GetConversationRequest {
                        conversation_id: conversation_id(campaign, next),
                    },
                ))
                .await
                .expect("get")
                .into_inner()
                .conversation
                .expect("a conversation");
            if conversation.assignee_id.is_some() {
                break;
            }
            assert!(
                resolved.elapsed() < Duration::from_secs(30),
                "{next} not drained within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(resolved.elapsed().as_micros() as u64);
        assigned.push_back(next);
    }
    latencies.sort_unstable();
    println!(
        "\nFreeing commit to assignment ({FREEINGS} resolves, one at a time, each freeing the one place the \
         first waiting conversation takes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        common::percentile_ms(&latencies, 0.50),
        common::percentile_ms(&latencies, 0.99),
        common::percentile_ms(&latencies, 1.0),
    );
}
