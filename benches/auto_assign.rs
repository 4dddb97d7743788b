//! Load generator for AutoAssignConversation, next to pgbench running the same work straight on PostgreSQL.
//!
//! `cargo bench --bench auto_assign` prints calls/s and p50/p99 latency for one hot campaign and for many
//! campaigns at 1, 8 and 32 concurrent callers: the service with coalescing (as deployed), the service with
//! one transaction per trigger (`--auto-assign-max-batch 1`), and pgbench running the per-trigger transaction
//! and its best one-statement form against the same database. Uses DATABASE_URL when set, otherwise a
//! private, durable PostgreSQL under target/. BENCH_SECONDS (default 5) sets each run's length.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use assignment_service::app;
use assignment_service::config::Config;
use assignment_service::embedded_pg::find_bin_dir;
use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::store::Store;
use clap::Parser;
use tonic::transport::Channel;

mod common;

use common::{BenchSchema, database, percentile_ms, seed_campaign, with_campaign};

const CALLERS: [usize; 3] = [1, 8, 32];
const ORGANIZERS: usize = 10;
const MANY_CAMPAIGNS: usize = 32;

struct Figures {
    calls: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Figures {
    fn row(mut self, what: &str, callers: usize) -> String {
        self.latencies_us.sort_unstable();
        format!(
            "| {what} | {callers} | {} | {:.0} | {:.2} | {:.2} |",
            self.calls,
            self.calls as f64 / self.seconds,
            percentile_ms(&self.latencies_us, 0.50),
            percentile_ms(&self.latencies_us, 0.99)
        )
    }
}

/// `callers` tasks auto-assign fresh conversations for `duration`; caller k's i-th call goes to
/// `campaigns[(k + i) % len]`.
async fn drive(
    addr: &str,
    campaigns: &[String],
    callers: usize,
    duration: Duration,
    tag: &str,
) -> Figures {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let campaigns = campaigns.to_vec();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut client = AssignmentServiceClient::new(channel);
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let campaign = &campaigns[(caller + i) % campaigns.len()];
                let conversation = format!("{tag}-{caller}-{i}");
                let request = with_campaign(
                    campaign,
                    None,
                    pb::AutoAssignConversationRequest {
                        trigger_id: format!("trigger-{conversation}"),
                        member_id: format!("member-{conversation}"),
                        conversation_id: conversation,
                        member_tags: vec![],
                    },
                );
                let sent = Instant::now();
                let reply = client
                    .auto_assign_conversation(request)
                    .await
                    .expect("auto-assign")
                    .into_inner();
                latencies.push(sent.elapsed().as_micros() as u64);
                assert_eq!(reply.outcome(), pb::AutoAssignOutcome::Assigned);
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.unwrap());
    }
    Figures {
        calls: latencies_us.len(),
        seconds: start.elapsed().as_secs_f64(),
        latencies_us,
    }
}

/// pgbench with `script` at `clients` for `duration`; latencies from its per-transaction log. `target` is
/// pgbench's connection arguments.
fn pgbench(
    target: &[String],
    schema: &str,
    script: &Path,
    campaign: &str,
    clients: usize,
    duration: Duration,
) -> Figures {
    let bin = find_bin_dir().expect("PostgreSQL binaries for pgbench");
    let logs = tempdir_for("pgbench-logs");
    let output = Command::new(bin.join("pgbench"))
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .args(["-n", "-M", "prepared", "--log"])
        .arg(format!("--log-prefix={}", logs.join("log").display()))
        .arg(format!("-c{clients}"))
        .arg(format!("-j{}", clients.min(2)))
        .arg(format!("-T{}", duration.as_secs()))
        .arg("-D")
        .arg(format!("campaign={campaign}"))
        .arg("-f")
        .arg(script)
        .args(target)
        .output()
        .expect("run pgbench");
    assert!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut latencies_us = Vec::new();
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            // client_id transaction_no time_us script_no epoch epoch_us
            if let Some(us) = line.split_whitespace().nth(2).and_then(|t| t.parse().ok()) {
                latencies_us.push(us);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&logs);
    Figures {
        calls: latencies_us.len(),
        seconds: duration.as_secs_f64(),
        latencies_us,
    }
}

fn tempdir_for(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("assignment-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server in this process, built as `main.rs` builds it; `max_batch` None keeps the default.
async fn start_server(url: &str, max_batch: Option<usize>) -> String {
    let max_batch = max_batch.map(|n| n.to_string());
    let mut args = vec![
        "assignment-service",
        "--listen-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--database-url",
        url,
    ];
    if let Some(n) = &max_batch {
        args.extend(["--auto-assign-max-batch", n.as_str()]);
    }
    let config = Config::try_parse_from(args).expect("bench flags");
    let server = app::build(&config).await.expect("build the server");
    let addr = server.local_addr().to_string();
    tokio::spawn(server.serve(std::future::pending()));
    addr
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let (server_url, cluster) = database();
    // The private cluster listens only on its Unix socket.
    let pg_target: Vec<String> = match &cluster {
        Some(cluster) => vec![
            "-h".into(),
            cluster.socket_dir().display().to_string(),
            "-p".into(),
            cluster.port().to_string(),
            "-U".into(),
            "postgres".into(),
            "postgres".into(),
        ],
        None => vec![server_url.clone()],
    };
    let bench_schema = BenchSchema::create(&server_url, "bench_auto_assign").await;
    let (schema, url) = (bench_schema.name.clone(), bench_schema.url.clone());

    let coalesced = start_server(&url, None).await;
    let one_by_one = start_server(&url, Some(1)).await;
    let setup = Channel::from_shared(format!("http://{coalesced}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let many: Vec<String> = (0..MANY_CAMPAIGNS)
        .map(|i| format!("many-{i:02}"))
        .collect();
    for campaign in ["hot", "hot-single", "pg-tx", "pg-one"]
        .iter()
        .map(|c| c.to_string())
        .chain(many.clone())
    {
        seed_campaign(&setup, &campaign, ORGANIZERS).await;
    }
    let seeded = Store::connect(&url, 1, Duration::from_secs(60))
        .await
        .unwrap();
    sqlx::query("CREATE SEQUENCE pgbench_conversation_seq")
        .execute(seeded.pool())
        .await
        .unwrap();

    println!("AutoAssignConversation, {seconds} s per run, {ORGANIZERS} organizers per campaign\n");
    println!("| path | callers | calls | calls/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pgbench");
    // Warm both servers (connections, prepared statements) so the first measured run is not penalised.
    let warm_up = Duration::from_secs(1);
    drive(&coalesced, &["hot".to_string()], 4, warm_up, "warm").await;
    drive(&one_by_one, &["hot-single".to_string()], 4, warm_up, "warm").await;
    let settle = || async {
        // Each run starts from a quiet database: no checkpoint or autovacuum left over from the run before.
        let _ = sqlx::query("CHECKPOINT").execute(seeded.pool()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for callers in CALLERS {
        let hot = ["hot".to_string()];
        settle().await;
        let row = drive(&coalesced, &hot, callers, duration, "hot").await;
        println!("{}", row.row("service, one hot campaign", callers));
        settle().await;
        let row = drive(
            &one_by_one,
            &["hot-single".to_string()],
            callers,
            duration,
            "single",
        )
        .await;
        println!(
            "{}",
            row.row("service, one hot campaign, no coalescing", callers)
        );
        settle().await;
        let row = drive(&coalesced, &many, callers, duration, "many").await;
        println!(
            "{}",
            row.row(&format!("service, {MANY_CAMPAIGNS} campaigns"), callers)
        );
        settle().await;
        let script = scripts.join("auto_assign_transaction.sql");
        let row = pgbench(&pg_target, &schema, &script, "pg-tx", callers, duration);
        println!(
            "{}",
            row.row(
                "pgbench, per-trigger transaction, one hot campaign",
                callers
            )
        );
        settle().await;
        let script = scripts.join("auto_assign_one_statement.sql");
        let row = pgbench(&pg_target, &schema, &script, "pg-one", callers, duration);
        println!(
            "{}",
            row.row("pgbench, one statement, one hot campaign", callers)
        );
    }

    // Exact fairness, whatever the load: per-organizer counts of each hot campaign differ by at most one.
    for campaign in ["hot", "hot-single", "pg-tx", "pg-one"] {
        let (min, max): (i64, i64) = sqlx::query_as(
            "SELECT min(n), max(n) FROM (SELECT count(*) AS n FROM conversations \
             WHERE campaign_id = $1 AND assignee_id IS NOT NULL GROUP BY assignee_id) counts",
        )
        .bind(campaign)
        .fetch_one(seeded.pool())
        .await
        .unwrap();
        println!("\n{campaign}: per-organizer assignments between {min} and {max}");
    }
    bench_schema.drop_schema().await;
}
