//! The NATS JetStream relay: how fast it publishes a campaign's feed, and how late an event reaches the
//! stream, beside bare JetStream publishes of the same messages from one client in the same run.
//!
//! `cargo bench --bench relay`: a nats-server of its own (Debian's `nats-server`, JetStream in a temporary
//! directory) on a free port, and the service in this process with `--nats-url`. Uses DATABASE_URL when
//! set, otherwise a private durable PostgreSQL under target/.
//!
//! Each run also says what it cost in CPU per message: this process (the service and its relay, or the bare
//! client), PostgreSQL (on the private cluster only) and the nats-server.
//!
//! - catch-up: RELAY_EVENTS (default 20,000) conversations are bulk-assigned through gRPC (one ASSIGN event
//!   each) while the campaign's relay lease is held by nobody live (a row naming a holder that never
//!   renews), then the lease is given up as a replica shutting down gives its up (`relay::release`): timed
//!   from then until the relay's position reaches the feed's head.
//! - lag: RELAY_CALLERS (default 8) callers send auto-assign triggers for RELAY_SECONDS (default 5) with the
//!   relay running; a subscriber on the campaign's subject takes each message's arrival minus the event's
//!   `occurred_at` (its transaction's start: the lag includes the commit).
//! - bare JetStream: the catch-up's messages (payload and headers) published again by one client to a
//!   stream of their own, each acknowledged before the next (as the relay does within a campaign), and
//!   pipelined (a thousand at a time, their acknowledgements awaited after).
//!
//! The summary's rows: catch-up events/s and its ratio to the bare sequential publishes, and the lag's
//! p50 / p99.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::store::Store;
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use common::cpu::{Client, CpuSample, process_cpu};
use common::{
    BenchSchema, connect, database, env_or, organizer_ids, percentile_ms, seed_campaign,
    start_server, with_campaign,
};
use futures_util::StreamExt;
use prost::Message;
use tonic::transport::Channel;

const CAMPAIGN: &str = "relay";
const ORGANIZERS: usize = 10;
const STREAM: &str = "ASSIGNMENT_EVENTS";
const SUBJECT: &str = "assignment.v1.events.relay";
const IDS_PER_MESSAGE: usize = 1_000;
/// Pipelined publishes awaited a window at a time (the client bounds the acknowledgements in flight).
const PIPELINE_WINDOW: usize = 1_000;

/// A nats-server with JetStream in a temporary directory, on a free port.
struct Nats {
    child: Child,
    dir: std::path::PathBuf,
    url: String,
}

impl Nats {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server");
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (apt-get install nats-server)");
        for _ in 0..250 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Nats {
    /// The nats-server's CPU so far.
    fn cpu(&self) -> Duration {
        process_cpu(self.child.id()).unwrap_or_default()
    }
}

/// The CPU a run cost per message: the bench process (the service and its relay, or the bare client),
/// PostgreSQL (on the private cluster only) and the nats-server.
struct PerMessage {
    process_us: f64,
    postgres_us: Option<f64>,
    nats_us: f64,
}

impl PerMessage {
    fn since(sample: CpuSample, nats_before: Duration, nats: &Nats, messages: usize) -> Self {
        let used = sample.until_now(messages, Client::ThisProcess);
        Self {
            process_us: used.client_ms * 1e3,
            postgres_us: used.postgres_ms.map(|ms| ms * 1e3),
            nats_us: (nats.cpu() - nats_before).as_secs_f64() * 1e6 / messages.max(1) as f64,
        }
    }

    /// The table's CPU columns: µs per message of each process, and their sum.
    fn columns(&self) -> String {
        let postgres = self.postgres_us.unwrap_or(0.0);
        format!(
            "{:.0} | {} | {:.0} | {:.0}",
            self.process_us,
            self.postgres_us.map_or("-".into(), |us| format!("{us:.0}")),
            self.nats_us,
            self.process_us + postgres + self.nats_us
        )
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn head_and_relayed(store: &Store) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce((SELECT last_seq FROM feed_heads WHERE campaign_id = $1), 0), \
                coalesce((SELECT relayed_seq FROM relay_positions WHERE campaign_id = $1), 0)",
    )
    .bind(CAMPAIGN)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Waits until the feed numbered every event written.
async fn until_numbered(store: &Store) {
    loop {
        let unnumbered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM assignment_events WHERE campaign_id = $1 AND seq IS NULL",
        )
        .bind(CAMPAIGN)
        .fetch_one(store.pool())
        .await
        .unwrap();
        if unnumbered == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the relay published the feed up to its head; returns when it was first seen to publish.
async fn until_relayed(store: &Store) -> Instant {
    let mut first = None;
    loop {
        until_numbered(store).await;
        let (head, relayed) = head_and_relayed(store).await;
        if relayed > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if head > 0 && head == relayed {
            return first.unwrap_or_else(Instant::now);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn bulk_assign(channel: Channel, count: usize) {
    use pb::bulk_assign_request::Payload;
    let options = pb::BulkAssignOptions {
        assignee_ids: organizer_ids(ORGANIZERS),
        ..Default::default()
    };
    let messages = std::iter::once(Payload::Options(options))
        .chain((0..count).step_by(IDS_PER_MESSAGE).map(move |start| {
            let end = (start + IDS_PER_MESSAGE).min(count);
            Payload::Conversations(pb::ConversationBatch {
                conversation_ids: (start..end).map(|n| format!("c{n:07}")).collect(),
            })
        }))
        .map(|payload| pb::BulkAssignRequest {
            payload: Some(payload),
        });
    let mut answers = AssignmentServiceClient::new(channel)
        .bulk_assign(with_campaign(
            CAMPAIGN,
            Some("admin"),
            tokio_stream::iter(messages),
        ))
        .await
        .expect("bulk assign")
        .into_inner();
    while answers.message().await.expect("bulk answers").is_some() {}
}

/// The stream's messages as published: (subject, headers, payload).
async fn published(
    context: &jetstream::Context,
) -> Vec<(String, async_nats::HeaderMap, bytes::Bytes)> {
    let mut stream = context.get_stream(STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut messages = Vec::with_capacity(last as usize);
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        messages.push((
            message.subject.to_string(),
            message.headers,
            message.payload,
        ));
    }
    messages
}

#[tokio::main]
async fn main() {
    let events: usize = env_or("RELAY_EVENTS", 20_000);
    let callers: usize = env_or("RELAY_CALLERS", 8);
    let seconds: u64 = env_or("RELAY_SECONDS", 5);
    let (server_url, _cluster) = database();
    let schema = BenchSchema::create(&server_url, "relay_bench").await;
    let nats = Nats::start().await;
    let addr = start_server(
        &schema.url,
        &["--nats-url", &nats.url, "--relay-interval", "20ms"],
    )
    .await;
    let channel = connect(&addr).await;
    seed_campaign(&channel, CAMPAIGN, ORGANIZERS).await;
    let store = Store::connect(&schema.url, 4, Duration::from_secs(60))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
         SELECT $1, 'c' || lpad(n::text, 7, '0'), 'member-' || n FROM generate_series(0, $2 - 1) AS n",
    )
    .bind(CAMPAIGN)
    .bind(events as i64)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();

    // Catch-up: the feed fills while a holder that never renews keeps the campaign from the relay.
    sqlx::query(
        "INSERT INTO relay_positions (campaign_id, holder, lease_until) \
         VALUES ($1, 'bench-pause', now() + interval '1 hour')",
    )
    .bind(CAMPAIGN)
    .execute(store.pool())
    .await
    .unwrap();
    bulk_assign(channel.clone(), events).await;
    until_numbered(&store).await;
    let (head, _) = head_and_relayed(&store).await;
    let (cpu, nats_cpu) = (CpuSample::now(), nats.cpu());
    let started = Instant::now();
    // As a replica shutting down gives its leases up: with a notification every replica hears.
    assignment_service::relay::release(&store, "bench-pause", false).await;
    let first = until_relayed(&store).await;
    let catch_up = started.elapsed().as_secs_f64();
    let (handed_over, publishing) = (first - started, first.elapsed());
    let (relayed_head, _) = head_and_relayed(&store).await;
    let relay_rate = relayed_head as f64 / catch_up;
    let relay_cpu = PerMessage::since(cpu, nats_cpu, &nats, relayed_head as usize);

    // Bare JetStream: the same messages, published again by one client to a stream of their own.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let context = jetstream::new(client.clone());
    eprintln!("caught up: {relayed_head} events in {catch_up:.2} s; reading the stream back");
    let messages = published(&context).await;
    eprintln!("read {} messages; publishing them again", messages.len());
    let bare_run = |name: &'static str| {
        let context = context.clone();
        async move {
            context
                .create_stream(jetstream::stream::Config {
                    name: name.into(),
                    subjects: vec![format!("bare.{name}.>")],
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    };
    bare_run("SEQUENTIAL").await;
    let (cpu, nats_cpu) = (CpuSample::now(), nats.cpu());
    let started = Instant::now();
    for (subject, headers, payload) in &messages {
        context
            .publish_with_headers(
                subject.replacen("assignment.v1.events", "bare.SEQUENTIAL", 1),
                headers.clone(),
                payload.clone(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let sequential = messages.len() as f64 / started.elapsed().as_secs_f64();
    let sequential_cpu = PerMessage::since(cpu, nats_cpu, &nats, messages.len());
    eprintln!("sequential: {sequential:.0}/s");
    bare_run("PIPELINED").await;
    let (cpu, nats_cpu) = (CpuSample::now(), nats.cpu());
    let started = Instant::now();
    let mut acks = Vec::with_capacity(PIPELINE_WINDOW);
    for (subject, headers, payload) in &messages {
        // Pipelined, a message cannot expect the one before it: only the id guards against repeats.
        let mut pipelined_headers = async_nats::HeaderMap::new();
        for name in [
            async_nats::header::NATS_MESSAGE_ID.as_ref(),
            "Content-Type",
            "Assignment-Event-Kind",
        ] {
            if let Some(value) = headers.get(name) {
                pipelined_headers.insert(name, value.as_str());
            }
        }
        let headers = pipelined_headers;
        acks.push(
            context
                .publish_with_headers(
                    subject.replacen("assignment.v1.events", "bare.PIPELINED", 1),
                    headers,
                    payload.clone(),
                )
                .await
                .unwrap(),
        );
        // The client bounds the acknowledgements it waits for: await them a window at a time.
        if acks.len() == PIPELINE_WINDOW {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let pipelined = messages.len() as f64 / started.elapsed().as_secs_f64();
    let pipelined_cpu = PerMessage::since(cpu, nats_cpu, &nats, messages.len());
    eprintln!("pipelined: {pipelined:.0}/s; measuring the lag");

    // Lag: triggers from `callers` callers while a subscriber takes each message's arrival.
    let mut subscriber = client.subscribe(SUBJECT).await.unwrap();
    let listen = tokio::spawn(async move {
        let mut lags_us = Vec::new();
        while let Some(message) = subscriber.next().await {
            let arrived = Utc::now();
            let event = pb::AssignmentEvent::decode(message.payload).unwrap();
            let at = event.occurred_at.unwrap();
            let occurred =
                DateTime::<Utc>::from_timestamp(at.seconds, at.nanos as u32).unwrap_or_default();
            lags_us.push((arrived - occurred).num_microseconds().unwrap_or(0).max(0) as u64);
            if event.conversation_id == "lag-stop" {
                break;
            }
        }
        lags_us
    });
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let mut api = AssignmentServiceClient::new(channel);
            let mut n = 0;
            while Instant::now() < deadline {
                let id = format!("lag-{caller}-{n}");
                let trigger = pb::AutoAssignConversationRequest {
                    conversation_id: id.clone(),
                    trigger_id: format!("t-{id}"),
                    member_id: format!("m-{id}"),
                    ..Default::default()
                };
                let _ = api
                    .auto_assign_conversation(with_campaign(CAMPAIGN, None, trigger))
                    .await;
                n += 1;
            }
            n
        }));
    }
    let mut triggers = 0;
    for task in tasks {
        triggers += task.await.unwrap();
    }
    // One last event ends the subscriber once it arrived.
    let stop = pb::AutoAssignConversationRequest {
        conversation_id: "lag-stop".into(),
        trigger_id: "t-lag-stop".into(),
        member_id: "m-lag-stop".into(),
        ..Default::default()
    };
    AssignmentServiceClient::new(channel.clone())
        .auto_assign_conversation(with_campaign(CAMPAIGN, None, stop))
        .await
        .unwrap();
    let mut lags = tokio::time::timeout(Duration::from_secs(60), listen)
        .await
        .expect("every event arrives")
        .unwrap();
    lags.sort_unstable();

    println!(
        "NATS JetStream relay, {relayed_head} events of one campaign, and {triggers} triggers\n"
    );
    println!(
        "| run | events | seconds | events/s | process CPU µs/event | PostgreSQL CPU µs/event | \
         nats-server CPU µs/event | all three µs/event |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| relay catch-up (feed to stream, in bursts, every message naming its predecessor) | {relayed_head} | {catch_up:.2} | {relay_rate:.0} | {} |",
        relay_cpu.columns()
    );
    println!(
        "| bare JetStream, one client, each acknowledged | {} | {:.2} | {sequential:.0} | {} |",
        messages.len(),
        messages.len() as f64 / sequential,
        sequential_cpu.columns()
    );
    println!(
        "| bare JetStream, one client, pipelined | {} | {:.2} | {pipelined:.0} | {} |",
        messages.len(),
        messages.len() as f64 / pipelined,
        pipelined_cpu.columns()
    );
    println!(
        "\nHand-over: the first message {:.0} ms after the lease was given up; then {:.0} events/s",
        handed_over.as_secs_f64() * 1000.0,
        relayed_head as f64 / publishing.as_secs_f64()
    );
    println!(
        "\nLag, commit to stream ({} events while {callers} callers sent triggers for {seconds} s): \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
        lags.len(),
        percentile_ms(&lags, 0.50),
        percentile_ms(&lags, 0.99),
        percentile_ms(&lags, 1.0)
    );
    println!("| summary | service | bare JetStream | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| relay catch-up | {relay_rate:.0} events/s | {sequential:.0} events/s | ratio={:.2} |",
        relay_rate / sequential
    );
    println!(
        "| relay lag p99 | {:.1} ms | - | - |",
        percentile_ms(&lags, 0.99)
    );
    assert_eq!(
        head, relayed_head,
        "nothing was written between the bulk and the catch-up"
    );
    schema.drop_schema().await;
}
