//! BulkAssign end to end through gRPC against the real server binary, next to the same work done one
//! conversation at a time with AssignConversation; prints time and the server's peak memory.
//!
//! `cargo bench --bench bulk`. Uses DATABASE_URL when set, otherwise a private durable PostgreSQL under
//! target/. BULK_SIZES (default "10000,100000") sets the selection sizes. Each size is also done as one
//! set-based statement straight on PostgreSQL, and the bench ends with the performance issue's summary rows
//! (`bulk <size>`: service seconds, database-only seconds, `ratio=` database time / service time), and a
//! row for 100,000 conversations bulk-assigned right after their import into a campaign whose plans were
//! made on a small table, with no ANALYZE in between.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::store::Store;
use common::{BenchSchema, database, organizer_ids, seed_campaign, with_campaign};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const CAMPAIGN: &str = "bulk";
const ORGANIZERS: usize = 10;
/// Conversation ids per stream message, as a client paging through a selection would send them.
const IDS_PER_MESSAGE: usize = 1_000;
/// Concurrent callers for the one-at-a-time comparison (a generous client).
const ONE_BY_ONE_CALLERS: usize = 16;

/// The real server binary in its own process, so its memory is its own.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    async fn start(database_url: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_assignment-service"))
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", &addr)
            .env("DATABASE_POOL_SIZE", "32")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the server binary");
        let server = Self { child, addr };
        for _ in 0..200 {
            if server.channel().await.is_some() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the server did not start");
    }

    async fn channel(&self) -> Option<Channel> {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .ok()
    }

    /// A line of /proc/<pid>/status in MiB (VmRSS: now, VmHWM: peak).
    fn memory_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn conversation_id(n: usize) -> String {
    format!("bulk-{n:07}")
}

/// Streams `count` conversations from `first` through BulkAssign; returns how many were assigned.
async fn bulk_assign(channel: Channel, first: usize, count: usize) -> i64 {
    use pb::bulk_assign_request::Payload;
    let options = pb::BulkAssignOptions {
        assignee_ids: organizer_ids(ORGANIZERS),
        ..Default::default()
    };
    // Messages are made as the transport asks for them: the client holds no more of the selection either.
    let messages = std::iter::once(Payload::Options(options))
        .chain(
            (first..first + count)
                .step_by(IDS_PER_MESSAGE)
                .map(move |start| {
                    let end = (start + IDS_PER_MESSAGE).min(first + count);
                    Payload::Conversations(pb::ConversationBatch {
                        conversation_ids: (start..end).map(conversation_id).collect(),
                    })
                }),
        )
        .map(|payload| pb::BulkAssignRequest {
            payload: Some(payload),
        });
    let mut responses = AssignmentServiceClient::new(channel)
        .bulk_assign(with_campaign(
            CAMPAIGN,
            Some("admin"),
            tokio_stream::iter(messages),
        ))
        .await
        .expect("bulk assign")
        .into_inner();
    let mut assigned = 0;
    while let Some(message) = responses.next().await {
        if let Some(pb::bulk_assign_response::Payload::Summary(summary)) =
            message.expect("stream").payload
        {
            assigned = summary.assigned;
        }
    }
    assigned
}

/// The same work one AssignConversation call per conversation, ONE_BY_ONE_CALLERS at a time.
async fn one_by_one(channel: Channel, first: usize, count: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(first));
    let organizers = Arc::new(organizer_ids(ORGANIZERS));
    let mut callers = Vec::new();
    for _ in 0..ONE_BY_ONE_CALLERS {
        let (next, organizers) = (next.clone(), organizers.clone());
        let mut client = AssignmentServiceClient::new(channel.clone());
        callers.push(tokio::spawn(async move {
            let mut done = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= first + count {
                    return done;
                }
                let request = pb::AssignConversationRequest {
                    conversation_id: conversation_id(n),
                    assignee_id: organizers[(n - first) % organizers.len()].clone(),
                    expected_version: None,
                };
                client
                    .assign_conversation(with_campaign(CAMPAIGN, Some("admin"), request))
                    .await
                    .expect("assign");
                done += 1;
            }
        }));
    }
    let mut done = 0;
    for caller in callers {
        done += caller.await.unwrap();
    }
    done
}

/// The bulk's work as one set-based statement: conversations `first..first + size` assigned round-robin
/// over the organizers, each with its history event and load change. Returns how many it assigned.
async fn set_based(store: &Store, first: usize, size: usize) -> u64 {
    sqlx::query(
        "WITH picked AS ( \
           SELECT conversation_id, row_number() OVER (ORDER BY conversation_id) AS rn FROM conversations \
            WHERE campaign_id = $1 AND conversation_id >= $2 AND conversation_id < $3 \
         ), assigned AS ( \
           UPDATE conversations c \
              SET assignee_id = 'org-' || lpad(((p.rn - 1) % $4)::text, 2, '0'), assigned_at = now(), \
                  assigned_by = 'admin', version = c.version + 1, updated_at = now(), clock = c.clock + 1 \
             FROM picked p \
            WHERE c.campaign_id = $1 AND c.conversation_id = p.conversation_id AND c.assignee_id IS NULL \
           RETURNING c.conversation_id, c.assignee_id, c.clock \
         ), loads AS ( \
           INSERT INTO organizer_load_changes (campaign_id, user_id, delta) \
           SELECT $1, assignee_id, count(*) FROM assigned GROUP BY assignee_id \
         ) \
         INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, actor_id, source, stamp) \
         SELECT $1, conversation_id, 'ASSIGN', assignee_id, 'admin', 'MANUAL', clock FROM assigned",
    )
    .bind(CAMPAIGN)
    .bind(conversation_id(first))
    .bind(conversation_id(first + size))
    .bind(ORGANIZERS as i64)
    .execute(store.pool())
    .await
    .unwrap()
    .rows_affected()
}

/// Conversations imported, and then bulk-assigned, after the plans were made on a small table.
const STALE_IMPORT: usize = 100_000;
/// Conversations of the small table the first bulk calls run on, and how many such calls.
const SMALL: usize = 1_000;
const SMALL_CALLS: usize = 4;

/// Seconds to bulk-assign [`STALE_IMPORT`] conversations imported into a fresh campaign after a few small
/// bulk calls, through the same server, with the statistics of the small table (no ANALYZE): the kept
/// plans were made before the import.
async fn bulk_after_import(server_url: &str) -> f64 {
    let bench_schema = BenchSchema::create(server_url, "bench_bulk_stale").await;
    let store = Store::connect(&bench_schema.url, 1, Duration::from_secs(60))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let import = |first: usize, count: usize| {
        sqlx::query(
            "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
             SELECT $1, 'bulk-' || lpad(n::text, 7, '0'), 'member-' || n \
               FROM generate_series($2, $2 + $3 - 1) AS n",
        )
        .bind(CAMPAIGN)
        .bind(first as i64)
        .bind(count as i64)
    };
    let server = Server::start(&bench_schema.url).await;
    let channel = server.channel().await.unwrap();
    seed_campaign(&channel, CAMPAIGN, ORGANIZERS).await;
    import(0, SMALL).execute(store.pool()).await.unwrap();
    let per_call = SMALL / SMALL_CALLS;
    for call in 0..SMALL_CALLS {
        bulk_assign(channel.clone(), call * per_call, per_call).await;
    }
    import(SMALL, STALE_IMPORT)
        .execute(store.pool())
        .await
        .unwrap();
    let started = Instant::now();
    let assigned = bulk_assign(channel, SMALL, STALE_IMPORT).await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(assigned, STALE_IMPORT as i64, "every conversation assigned");
    drop(server);
    store.pool().close().await;
    bench_schema.drop_schema().await;
    seconds
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BULK_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("BULK_SIZES: comma-separated numbers")
        })
        .collect();
    let (server_url, _cluster) = database();
    let bench_schema = BenchSchema::create(&server_url, "bench_bulk").await;
    let url = bench_schema.url.clone();
    let store = Store::connect(&url, 2, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    store.migrate().await.unwrap();

    let total: usize = sizes.iter().sum::<usize>() * 3;
    {
        let setup = Server::start(&url).await;
        seed_campaign(&setup.channel().await.unwrap(), CAMPAIGN, ORGANIZERS).await;
    }
    // The directory sync is not what is measured: the conversations go straight into the table.
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
         SELECT $1, 'bulk-' || lpad(n::text, 7, '0'), 'member-' || n FROM generate_series(0, $2 - 1) AS n",
    )
    .bind(CAMPAIGN)
    .bind(total as i64)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();

    println!("Assigning conversations over {ORGANIZERS} organizers, end to end through gRPC\n");
    println!(
        "| work | conversations | seconds | conversations/s | server RSS at start MiB | server peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|");
    let mut first = 0;
    let mut summary = Vec::new();
    for &size in &sizes {
        let server = Server::start(&url).await;
        let at_start = server.memory_mib("VmRSS:");
        let started = Instant::now();
        let assigned = bulk_assign(server.channel().await.unwrap(), first, size).await;
        let seconds = started.elapsed().as_secs_f64();
        let bulk_seconds = seconds;
        assert_eq!(assigned, size as i64, "every conversation assigned");
        println!(
            "| BulkAssign, {IDS_PER_MESSAGE} ids per message | {size} | {seconds:.1} | {:.0} | {at_start:.1} | {:.1} |",
            size as f64 / seconds,
            server.memory_mib("VmHWM:")
        );
        first += size;
        drop(server);

        let server = Server::start(&url).await;
        let at_start = server.memory_mib("VmRSS:");
        let started = Instant::now();
        let done = one_by_one(server.channel().await.unwrap(), first, size).await;
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(done, size);
        println!(
            "| AssignConversation one at a time, {ONE_BY_ONE_CALLERS} callers | {size} | {seconds:.1} | {:.0} | {at_start:.1} | {:.1} |",
            size as f64 / seconds,
            server.memory_mib("VmHWM:")
        );
        first += size;

        let started = Instant::now();
        let done = set_based(&store, first, size).await;
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(done, size as u64);
        println!(
            "| set-based SQL straight on PostgreSQL, one statement | {size} | {seconds:.1} | {:.0} | - | - |",
            size as f64 / seconds
        );
        first += size;
        summary.push((size, bulk_seconds, seconds));
    }
    let stale = bulk_after_import(&server_url).await;
    println!("\n| summary | service | database only | ratio |");
    println!("|---|---|---|---|");
    for (size, service, database) in summary {
        println!(
            "| bulk {size} | {service:.2} s | {database:.2} s | ratio={:.2} |",
            database / service
        );
    }
    println!("| bulk {STALE_IMPORT} after an import, no ANALYZE | {stale:.2} s | - | - |");
    let (min, max): (i64, i64) = sqlx::query_as(
        "SELECT min(n), max(n) FROM (SELECT count(*) AS n FROM assignment_events \
         WHERE source = 'BULK' GROUP BY to_user_id) counts",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    println!("\nbulk assignments per organizer: between {min} and {max}");
    store.pool().close().await;
    bench_schema.drop_schema().await;
}
