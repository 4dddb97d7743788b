//! The feed: how late events reach watchers, and what watchers cost the writes, next to PostgreSQL's own
//! LISTEN/NOTIFY delivering the same rows.
//!
//! `cargo bench --bench feed`: one campaign (admin "admin", 10 organizers); writers assign fresh
//! conversations through AssignConversation at a steady RATE (100 and 1,000 events/s) for FEED_SECONDS
//! (default 5; FEED_RATES and FEED_WATCHERS pick other lists, e.g. "1000" and "0,10"), while WATCHERS (10 and 100) WatchAssignmentEvents streams, as the admin, read every event.
//! Delivery latency is the watcher's clock at receipt minus the event's `occurred_at` (the start of the
//! writing transaction; same machine, same clock), over every event at every watcher. Write latency is the
//! AssignConversation call's, beside the same rate with no watcher. The baseline in the same run: plain
//! PostgreSQL, one INSERT of the event row and a NOTIFY with it per transaction at the same rate, received
//! by the same number of LISTEN connections. Uses DATABASE_URL when set, otherwise a private, durable
//! PostgreSQL under target/ (300 connections: the 100-listener baseline needs them).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::store::Store;
use common::{
    BenchSchema, connect, database, organizer_ids, percentile_ms, seed_campaign, start_server,
    with_campaign,
};
use sqlx::postgres::PgListener;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

const CAMPAIGN: &str = "feed-bench";
const ORGANIZERS: usize = 10;
/// Calls in flight at once, so a slow call does not hold back the pace.
const MAX_IN_FLIGHT: usize = 64;

struct Run {
    path: &'static str,
    rate: usize,
    watchers: usize,
    events: usize,
    achieved: f64,
    delivered: Vec<u64>,
    writes: Vec<u64>,
}

fn seconds() -> u64 {
    std::env::var("FEED_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// A comma-separated list from the environment (FEED_RATES, FEED_WATCHERS), or `default`.
fn list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn micros_since(occurred_at: chrono::DateTime<chrono::Utc>) -> u64 {
    (chrono::Utc::now() - occurred_at)
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .max(0) as u64
}

/// Runs `write(n)` for n in 0..count at `rate` a second; returns each call's latency (µs) and the achieved
/// rate.
async fn paced<F, Fut>(rate: usize, count: usize, write: F) -> (Vec<u64>, f64)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut calls = Vec::with_capacity(count);
    for n in 0..count {
        ticks.tick().await;
        let slot = slots.clone().acquire_owned().await.unwrap();
        let call = write(n);
        calls.push(tokio::spawn(async move {
            let at = Instant::now();
            call.await;
            drop(slot);
            at.elapsed().as_micros() as u64
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for call in calls {
        latencies.push(call.await.unwrap());
    }
    let achieved = count as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    (latencies, achieved)
}

async fn create_conversations(store: &Store, first: usize, count: usize) {
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
         SELECT $1, 'feed-' || lpad(n::text, 7, '0'), 'member-' || n FROM generate_series($2, $3 - 1) AS n",
    )
    .bind(CAMPAIGN)
    .bind(first as i64)
    .bind((first + count) as i64)
    .execute(store.pool())
    .await
    .unwrap();
}

/// One service run: `watchers` streams, then `rate` × seconds assignments of fresh conversations from
/// `first` on.
async fn service_run(
    addr: &str,
    channel: &Channel,
    store: &Store,
    rate: usize,
    watchers: usize,
    first: usize,
) -> Run {
    let count = rate * seconds() as usize;
    create_conversations(store, first, count).await;
    let mut readers = Vec::new();
    for _ in 0..watchers {
        // Each watcher on a connection of its own, as separate consumers would be.
        let mut stream = AssignmentServiceClient::new(connect(addr).await)
            .watch_assignment_events(with_campaign(
                CAMPAIGN,
                Some("admin"),
                pb::WatchAssignmentEventsRequest::default(),
            ))
            .await
            .expect("watch")
            .into_inner();
        readers.push(tokio::spawn(async move {
            let mut delivered = Vec::with_capacity(count);
            while delivered.len() < count {
                let next = tokio::time::timeout(Duration::from_secs(30), stream.message()).await;
                let Ok(Ok(Some(message))) = next else {
                    panic!("the watcher stopped after {} events", delivered.len());
                };
                let occurred = message
                    .event
                    .and_then(|e| e.occurred_at)
                    .expect("occurred_at");
                let occurred =
                    chrono::DateTime::from_timestamp(occurred.seconds, occurred.nanos as u32)
                        .expect("a valid timestamp");
                delivered.push(micros_since(occurred));
            }
            delivered
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let organizers = Arc::new(organizer_ids(ORGANIZERS));
    let (writes, achieved) = paced(rate, count, |n| {
        let mut client = AssignmentServiceClient::new(channel.clone());
        let request = pb::AssignConversationRequest {
            conversation_id: format!("feed-{:07}", first + n),
            assignee_id: organizers[n % ORGANIZERS].clone(),
            expected_version: None,
        };
        async move {
            client
                .assign_conversation(with_campaign(CAMPAIGN, Some("admin"), request))
                .await
                .expect("assign");
        }
    })
    .await;
    let mut delivered = Vec::with_capacity(count * watchers);
    for reader in readers {
        delivered.extend(reader.await.unwrap());
    }
    delivered.sort_unstable();
    Run {
        path: "service: AssignConversation, WatchAssignmentEvents",
        rate,
        watchers,
        events: count,
        achieved,
        delivered,
        writes,
    }
}

/// The baseline: an INSERT and a NOTIFY per transaction, `listeners` LISTEN connections receiving them.
async fn postgres_run(url: &str, store: &Store, rate: usize, listeners: usize) -> Run {
    let count = rate * seconds() as usize;
    let channel = "feed_bench_baseline";
    let mut readers = Vec::new();
    for _ in 0..listeners {
        let mut listener = PgListener::connect(url).await.expect("listen");
        listener.listen(channel).await.unwrap();
        readers.push(tokio::spawn(async move {
            let mut delivered = Vec::with_capacity(count);
            while delivered.len() < count {
                let note = tokio::time::timeout(Duration::from_secs(30), listener.recv())
                    .await
                    .expect("a notification within 30 s")
                    .unwrap();
                let occurred: chrono::DateTime<chrono::Utc> =
                    note.payload().parse().expect("a timestamp payload");
                delivered.push(micros_since(occurred));
            }
            delivered
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (writes, achieved) = paced(rate, count, |n| {
        let pool = store.pool().clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let occurred: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
                "INSERT INTO feed_bench_events (n, occurred_at) VALUES ($1, now()) RETURNING occurred_at",
            )
            .bind(n as i64)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(occurred.to_rfc3339())
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    })
    .await;
    let mut delivered = Vec::with_capacity(count * listeners);
    for reader in readers {
        delivered.extend(reader.await.unwrap());
    }
    delivered.sort_unstable();
    Run {
        path: "PostgreSQL: INSERT + NOTIFY, LISTEN",
        rate,
        watchers: listeners,
        events: count,
        achieved,
        delivered,
        writes,
    }
}

/// Auto-assign calls through `callers` closed-loop callers for the run's seconds, while `watchers` streams
/// read every event: (calls/s, sorted latencies in µs).
async fn auto_assign_run(
    addr: &str,
    callers: usize,
    watchers: usize,
    tag: &str,
) -> (f64, Vec<u64>) {
    let mut readers = Vec::new();
    for _ in 0..watchers {
        let mut stream = AssignmentServiceClient::new(connect(addr).await)
            .watch_assignment_events(with_campaign(
                CAMPAIGN,
                Some("admin"),
                pb::WatchAssignmentEventsRequest::default(),
            ))
            .await
            .expect("watch")
            .into_inner();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(_)) = stream.message().await {}
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = Instant::now() + Duration::from_secs(seconds());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let mut client = AssignmentServiceClient::new(connect(addr).await);
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let conversation = format!("{tag}-{caller}-{i}");
                let request = pb::AutoAssignConversationRequest {
                    priority: Default::default(),
                    trigger_id: format!("trigger-{conversation}"),
                    member_id: format!("member-{conversation}"),
                    conversation_id: conversation,
                    member_tags: vec![],
                };
                let sent = Instant::now();
                client
                    .auto_assign_conversation(with_campaign(CAMPAIGN, None, request))
                    .await
                    .expect("auto-assign");
                latencies.push(sent.elapsed().as_micros() as u64);
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    for reader in readers {
        reader.abort();
    }
    latencies.sort_unstable();
    (rate, latencies)
}

fn print(runs: &[Run]) {
    println!(
        "| path | events/s asked | achieved | watchers | events | delivery p50 ms | delivery p99 ms | write p50 ms | write p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let (d50, d99) = if run.watchers == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.2}", percentile_ms(&run.delivered, 0.50)),
                format!("{:.2}", percentile_ms(&run.delivered, 0.99)),
            )
        };
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} |",
            run.path,
            run.rate,
            run.achieved,
            run.watchers,
            run.events,
            d50,
            d99,
            percentile_ms(&run.writes, 0.50),
            percentile_ms(&run.writes, 0.99),
        );
    }
}

#[tokio::main]
async fn main() {
    let (server_url, _cluster) = database();
    let bench_schema = BenchSchema::create(&server_url, "bench_feed").await;
    let url = bench_schema.url.clone();
    // Every watcher and writer is one caller acting as one admin: the shares must not bind.
    let addr = start_server(
        &url,
        &[
            "--max-concurrent-calls",
            "1000",
            "--max-calls-per-caller",
            "1000",
            "--max-calls-per-actor",
            "1000",
        ],
    )
    .await;
    let channel = connect(&addr).await;
    let store = Store::connect(&url, 32, Duration::from_secs(60))
        .await
        .expect("connect");
    seed_campaign(&channel, CAMPAIGN, ORGANIZERS).await;
    sqlx::query("CREATE TABLE feed_bench_events (n bigint, occurred_at timestamptz)")
        .execute(store.pool())
        .await
        .unwrap();
    println!(
        "The feed: delivery latency (event write to watcher) and write latency, {} s per run\n",
        seconds()
    );
    let mut runs = Vec::new();
    let mut first = 0;
    for rate in list("FEED_RATES", &[100, 1000]) {
        for watchers in list("FEED_WATCHERS", &[0, 10, 100]) {
            runs.push(service_run(&addr, &channel, &store, rate, watchers, first).await);
            first += rate * seconds() as usize;
        }
        for listeners in list("FEED_WATCHERS", &[10, 100])
            .into_iter()
            .filter(|&n| n > 0)
        {
            runs.push(postgres_run(&url, &store, rate, listeners).await);
        }
    }
    print(&runs);

    let callers = list("FEED_AUTO_CALLERS", &[8])[0];
    println!(
        "\nWhat watchers cost the writes: AutoAssignConversation, {callers} callers, {} s, beside the same \
         with watchers reading every event\n",
        seconds()
    );
    println!("| watchers | calls/s | p50 ms | p99 ms | x without watchers |");
    println!("|---|---|---|---|---|");
    let mut without = None;
    for watchers in [0, 100] {
        let (rate, latencies) =
            auto_assign_run(&addr, callers, watchers, &format!("auto-{watchers}")).await;
        let baseline = *without.get_or_insert(rate);
        println!(
            "| {watchers} | {rate:.0} | {:.2} | {:.2} | {:.2} |",
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.99),
            rate / baseline
        );
    }
    drop(store);
    bench_schema.drop_schema().await;
}
