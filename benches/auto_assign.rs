//! Load generator for AutoAssignConversation, next to pgbench running the same work straight on PostgreSQL.
//!
//! `cargo bench --bench auto_assign` prints calls/s and p50/p99 latency for one hot campaign and for many
//! campaigns at 1, 8 and 32 concurrent callers: the service with coalescing (as deployed), the same hot load
//! with routing in play (3 of the 10 organizers AWAY; a default capacity of 1,000,000 that never binds but
//! makes every batch read the organizers' loads; balanced mode), the service with one transaction per
//! trigger (`--auto-assign-max-batch 1`), and pgbench running the per-trigger transaction and its best
//! one-statement form against the same database (on the hot campaign and over 32 campaigns; what the
//! transaction reaches against the one statement, as written and with its round trips pipelined into two,
//! is printed after the table). Manual AssignConversation at 32 callers runs beside pgbench's plain
//! lock-update-event transaction and beside pgbench running the service's own two statements for it;
//! grpc.health.v1 Check at each caller count gives the gRPC transport's own floor (no database). Every row
//! also says how it compares with today's path (one hot campaign, round-robin, no capacity) at the same
//! callers, and where the CPU went: the load generator's process per call (for the service's rows, the bench
//! process: the server and its callers; for pgbench's, pgbench), PostgreSQL's processes per call (on the
//! private cluster only; background work such as autovacuum counts too), and the share of the machine's
//! cores that were busy. Uses DATABASE_URL when set, otherwise a private, durable PostgreSQL under target/.
//! BENCH_SECONDS (default 5) sets each run's length; BENCH_CALLERS (default `1,8,32`) the caller counts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use assignment_service::embedded_pg::find_bin_dir;
use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::store::Store;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

mod common;

use common::cpu::{Client, CpuSample, CpuUse};
use common::{
    BenchSchema, assignment_spread, connect, database, organizer_ids, percentile_ms, seed_campaign,
    set_availability, settle, start_server, update_settings, with_campaign,
};

const CALLERS: [usize; 3] = [1, 8, 32];
const ORGANIZERS: usize = 10;
const MANY_CAMPAIGNS: usize = 32;
/// Organizers AWAY in the routing runs (the last ones by id).
const AWAY: usize = 3;
/// A default capacity no organizer reaches in a run: every batch reads the loads, none binds.
const LOOSE_CAPACITY: i32 = 1_000_000;

/// The campaign of the service's manual assignments, and pgbench's; each holds this many unassigned
/// conversations, one per call.
const MANUAL: &str = "manual";
const PG_MANUAL: &str = "pgmanual";
/// pgbench running the service's own manual-assign statements (see [`service_manual_script`]).
const PG_SERVICE_MANUAL: &str = "pgservice";
const MANUAL_CONVERSATIONS: usize = 100_000;

/// `callers` tasks assign the next unassigned conversation of the manual campaign to an organizer (as the
/// admin, round-robin over the organizers) for `duration`.
async fn drive_manual(addr: &str, callers: usize, duration: Duration) -> Figures {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let organizers = organizer_ids(ORGANIZERS);
    let cpu = CpuSample::now();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut client = AssignmentServiceClient::new(connect(addr).await);
        let next = next.clone();
        let organizers = organizers.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert!(n <= MANUAL_CONVERSATIONS, "out of manual conversations");
                let request = pb::AssignConversationRequest {
                    conversation_id: format!("{MANUAL}-{n:07}"),
                    assignee_id: organizers[n % ORGANIZERS].clone(),
                    expected_version: None,
                };
                let sent = Instant::now();
                client
                    .assign_conversation(with_campaign(MANUAL, Some("admin"), request))
                    .await
                    .expect("assign");
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    Figures::collect(tasks, start, cpu).await
}

/// `callers` tasks call grpc.health.v1 Check for `duration`: a call that reaches no database, so the
/// gRPC transport's own latency and CPU (client and server) on this machine.
async fn drive_health(addr: &str, callers: usize, duration: Duration) -> Figures {
    let cpu = CpuSample::now();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut client = HealthClient::new(connect(addr).await);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                client
                    .check(HealthCheckRequest::default())
                    .await
                    .expect("health check");
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    Figures::collect(tasks, start, cpu).await
}

/// A pgbench script running the transaction the service runs for AssignConversation, with the service's
/// own two statements (built by the same functions the service calls): lock the conversation with the
/// actor's grants and share-lock the actor and the target, then update it, write its event and take it
/// out of the waiting queue. It leaves out only what the service does outside PostgreSQL (gRPC, deciding)
/// and its feed's numbering, so it tells how much of the gap to pgbench's plain transaction is the SQL
/// that the product's rules need, and how much the service's own process.
fn service_manual_script() -> String {
    use assignment_service::store::conversations::{lock_with_users_sql, set_assignee_sql};
    // Each statement's parameters as pgbench variables, the highest first ($1 must not eat $10's digits).
    let bind = |sql: String, params: &[(&str, &str)]| {
        params
            .iter()
            .fold(sql, |sql, (param, value)| sql.replace(param, value))
    };
    let lock = bind(
        lock_with_users_sql(),
        &[
            ("$5", "NULL::text"),
            ("$4", "ARRAY['admin', :org]::text[]"),
            ("$3", "'admin'"),
            ("$2", ":id"),
            ("$1", ":campaign"),
        ],
    );
    let write = bind(
        set_assignee_sql(),
        &[
            ("$8", "NULL::text"),
            ("$7", "'MANUAL'"),
            ("$6", "NULL::text"),
            ("$5", "'ASSIGN'"),
            ("$4", "'admin'"),
            ("$3", ":org"),
            ("$2", ":id"),
            ("$1", ":campaign"),
        ],
    );
    format!(
        "\\set organizer random(0, {})\n\
         SELECT '{PG_SERVICE_MANUAL}-' || lpad(nextval('pgbench_service_seq')::text, 7, '0') AS id, \
                'org-' || lpad(:organizer::text, 2, '0') AS org \\gset\n\
         BEGIN;\n{lock};\n{write};\nCOMMIT;\n",
        ORGANIZERS - 1
    )
}

/// The hot campaigns with routing in play: name, what the table calls it, and its settings.
fn routing_campaigns() -> Vec<(&'static str, String, pb::UpdateInboxSettingsRequest)> {
    vec![
        (
            "hot-away",
            format!("service, one hot campaign, {AWAY} of {ORGANIZERS} AWAY"),
            pb::UpdateInboxSettingsRequest::default(),
        ),
        (
            "hot-capacity",
            format!(
                "service, one hot campaign, {AWAY} AWAY, default_capacity {LOOSE_CAPACITY} (loads read)"
            ),
            pb::UpdateInboxSettingsRequest {
                default_capacity: Some(LOOSE_CAPACITY),
                ..Default::default()
            },
        ),
        (
            "hot-balanced",
            format!("service, one hot campaign, {AWAY} AWAY, balanced (loads read)"),
            pb::UpdateInboxSettingsRequest {
                routing_mode: pb::RoutingMode::Balanced.into(),
                ..Default::default()
            },
        ),
    ]
}

/// The summary: each row's service figures beside the database-only figures of the same work.
#[derive(Default)]
struct Summary(Vec<(String, Figures, Figures)>);

impl Summary {
    fn add(&mut self, label: &str, service: Figures, database: Figures) {
        self.0.push((label.to_owned(), service, database));
    }

    /// Prints the rows in the order (the bulk rows come from `cargo bench --bench bulk`).
    fn print(mut self) {
        const ORDER: [&str; 6] = [
            "auto-assign 32 campaigns c1",
            "auto-assign 32 campaigns c8",
            "auto-assign 32 campaigns c32",
            "auto-assign hot c8",
            "auto-assign hot c32",
            "manual assign c32",
        ];
        self.0
            .sort_by_key(|(label, _, _)| ORDER.iter().position(|o| o == label));
        println!("\n| summary | service | database only | ratio |");
        println!("|---|---|---|---|");
        for (label, service, database) in &mut self.0 {
            service.latencies_us.sort_unstable();
            database.latencies_us.sort_unstable();
            println!(
                "| {label} | {:.0} calls/s (p50 {:.2} ms) | {:.0} tx/s (p50 {:.2} ms) | ratio={:.2} |",
                service.rate(),
                percentile_ms(&service.latencies_us, 0.50),
                database.rate(),
                percentile_ms(&database.latencies_us, 0.50),
                service.rate() / database.rate()
            );
        }
    }
}

struct Figures {
    calls: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
    cpu: CpuUse,
}

impl Figures {
    /// Waits for the callers' tasks (each returns its calls' latencies) started at `start`, with the CPU
    /// counters as they were before the callers connected.
    async fn collect(
        tasks: Vec<tokio::task::JoinHandle<Vec<u64>>>,
        start: Instant,
        cpu: CpuSample,
    ) -> Self {
        let mut latencies_us = Vec::new();
        for task in tasks {
            latencies_us.extend(task.await.unwrap());
        }
        Figures {
            calls: latencies_us.len(),
            seconds: start.elapsed().as_secs_f64(),
            cpu: cpu.until_now(latencies_us.len(), Client::ThisProcess),
            latencies_us,
        }
    }

    fn rate(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    fn p50_ms(&mut self) -> f64 {
        self.latencies_us.sort_unstable();
        percentile_ms(&self.latencies_us, 0.50)
    }

    /// A table row; `baseline` is today's path's calls/s at the same callers.
    fn row(&mut self, what: &str, callers: usize, baseline: f64) -> String {
        self.latencies_us.sort_unstable();
        let postgres = self
            .cpu
            .postgres_ms
            .map_or("n/a".to_string(), |ms| format!("{ms:.3}"));
        format!(
            "| {what} | {callers} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {postgres} | {:.0}% |",
            self.calls,
            self.rate(),
            percentile_ms(&self.latencies_us, 0.50),
            percentile_ms(&self.latencies_us, 0.99),
            self.rate() / baseline,
            self.cpu.client_ms,
            self.cpu.busy * 100.0
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
    let cpu = CpuSample::now();
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
                // Fresh in every run: a conversation of an earlier run would be a cheap redelivery.
                let conversation = format!("{tag}-{callers}-{caller}-{i}");
                let request = with_campaign(
                    campaign,
                    None,
                    pb::AutoAssignConversationRequest {
                        priority: Default::default(),
                        trigger_id: format!("trigger-{conversation}"),
                        member_id: format!("member-{conversation}"),
                        conversation_id: conversation.clone(),
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
                assert!(
                    !reply.duplicate_trigger,
                    "{conversation} was triggered before"
                );
                i += 1;
            }
            latencies
        }));
    }
    Figures::collect(tasks, start, cpu).await
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
    pgbench_scripts(
        target,
        schema,
        &[script.to_path_buf()],
        &[("campaign", campaign)],
        clients,
        duration,
    )
}

/// pgbench picking one of `scripts` at random for each transaction, with `defines` as `-D` variables.
fn pgbench_scripts(
    target: &[String],
    schema: &str,
    scripts: &[PathBuf],
    defines: &[(&str, &str)],
    clients: usize,
    duration: Duration,
) -> Figures {
    let bin = find_bin_dir().expect("PostgreSQL binaries for pgbench");
    let logs = tempdir_for("pgbench-logs");
    let cpu = CpuSample::now();
    let output = Command::new(bin.join("pgbench"))
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .args(["-n", "-M", "prepared", "--log"])
        .arg(format!("--log-prefix={}", logs.join("log").display()))
        .arg(format!("-c{clients}"))
        .arg(format!("-j{}", clients.min(2)))
        .arg(format!("-T{}", duration.as_secs()))
        .args(
            defines
                .iter()
                .flat_map(|(k, v)| ["-D".to_string(), format!("{k}={v}")]),
        )
        .args(
            scripts
                .iter()
                .flat_map(|s| ["-f".into(), s.display().to_string()]),
        )
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
        cpu: cpu.until_now(latencies_us.len(), Client::WaitedChildren),
        latencies_us,
    }
}

/// `template` with `:campaign` bound to each of `campaigns`, written to `dir` (pgbench picks one script at
/// random per transaction: a random campaign).
fn per_campaign_scripts(
    template: &str,
    campaigns: &[String],
    dir: &Path,
    kind: &str,
) -> Vec<PathBuf> {
    campaigns
        .iter()
        .map(|campaign| {
            let path = dir.join(format!("{campaign}-{kind}.sql"));
            std::fs::write(
                &path,
                template.replace(":campaign", &format!("'{campaign}'")),
            )
            .unwrap();
            path
        })
        .collect()
}

/// What pgbench's own statement-by-statement transaction (the shape any service that decides between a read
/// and a write must have), and the same with its round trips pipelined into two, reach against its one
/// statement, over the same campaigns.
fn floor_line(
    callers: usize,
    transaction: &mut Figures,
    pipelined: &mut Figures,
    one_statement: &mut Figures,
) -> String {
    let one_p50 = one_statement.p50_ms();
    format!(
        "pgbench's per-trigger transaction over {MANY_CAMPAIGNS} campaigns, c{callers}: {:.2} of its one \
         statement's rate, p50 {:.2} times its one statement's; pipelined into two round trips, {:.2} of the \
         rate, p50 {:.2} times.",
        transaction.rate() / one_statement.rate(),
        transaction.p50_ms() / one_p50,
        pipelined.rate() / one_statement.rate(),
        pipelined.p50_ms() / one_p50,
    )
}

fn tempdir_for(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("assignment-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

    let coalesced = start_server(&url, &[]).await;
    let one_by_one = start_server(&url, &["--auto-assign-max-batch", "1"]).await;
    let setup = connect(&coalesced).await;
    let many: Vec<String> = (0..MANY_CAMPAIGNS)
        .map(|i| format!("many-{i:02}"))
        .collect();
    let routing = routing_campaigns();
    for campaign in ["hot", "hot-single", "pg-tx", "pg-one"]
        .iter()
        .map(|c| c.to_string())
        .chain(routing.iter().map(|(c, _, _)| c.to_string()))
        .chain(many.clone())
    {
        seed_campaign(&setup, &campaign, ORGANIZERS).await;
    }
    for (campaign, _, settings) in &routing {
        update_settings(&setup, campaign, settings.clone()).await;
        for organizer in &organizer_ids(ORGANIZERS)[ORGANIZERS - AWAY..] {
            set_availability(&setup, campaign, organizer, pb::Availability::Away).await;
        }
    }
    let pg_many: Vec<String> = (0..MANY_CAMPAIGNS)
        .map(|i| format!("pgmany-{i:02}"))
        .collect();
    for campaign in pg_many.iter().chain(&many) {
        if campaign.starts_with("pgmany") {
            seed_campaign(&setup, campaign, ORGANIZERS).await;
        }
        // The targets hold on the routing path: availability and capacity in play.
        let settings = pb::UpdateInboxSettingsRequest {
            default_capacity: Some(LOOSE_CAPACITY),
            ..Default::default()
        };
        update_settings(&setup, campaign, settings).await;
        for organizer in &organizer_ids(ORGANIZERS)[ORGANIZERS - AWAY..] {
            set_availability(&setup, campaign, organizer, pb::Availability::Away).await;
        }
    }
    for campaign in [MANUAL, PG_MANUAL, PG_SERVICE_MANUAL] {
        seed_campaign(&setup, campaign, ORGANIZERS).await;
    }
    let seeded = Store::connect(&url, 1, Duration::from_secs(60))
        .await
        .unwrap();
    for sql in [
        "CREATE SEQUENCE pgbench_conversation_seq",
        "CREATE SEQUENCE pgbench_manual_seq",
        "CREATE SEQUENCE pgbench_service_seq",
    ] {
        sqlx::query(sql).execute(seeded.pool()).await.unwrap();
    }
    for campaign in [MANUAL, PG_MANUAL, PG_SERVICE_MANUAL] {
        sqlx::query(
            "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
             SELECT $1, $1 || '-' || lpad(n::text, 7, '0'), 'member-' || n FROM generate_series(1, $2) AS n",
        )
        .bind(campaign)
        .bind(MANUAL_CONVERSATIONS as i64)
        .execute(seeded.pool())
        .await
        .unwrap();
    }
    // Vacuumed now, so autovacuum does not take the machine from the first measured runs.
    sqlx::query("VACUUM (ANALYZE)")
        .execute(seeded.pool())
        .await
        .unwrap();
    let scripts_dir = tempdir_for("pgbench-scripts");
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pgbench/auto_assign_one_statement.sql"),
    )
    .unwrap();
    let many_scripts = per_campaign_scripts(&template, &pg_many, &scripts_dir, "one");
    let many_tx_scripts = per_campaign_scripts(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("benches/pgbench/auto_assign_transaction.sql"),
        )
        .unwrap(),
        &pg_many,
        &scripts_dir,
        "tx",
    );
    let many_pipelined_scripts = per_campaign_scripts(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pgbench/auto_assign_pipelined.sql"),
        )
        .unwrap(),
        &pg_many,
        &scripts_dir,
        "pipelined",
    );
    let mut summary = Summary::default();
    let mut floors = Vec::new();

    println!("AutoAssignConversation, {seconds} s per run, {ORGANIZERS} organizers per campaign\n");
    println!(
        "| path | callers | calls | calls/s | p50 ms | p99 ms | x today's path | client CPU ms/call | \
         PostgreSQL CPU ms/call | machine busy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pgbench");
    // Warm both servers (connections, prepared statements) so the first measured run is not penalised; the
    // hot campaigns compared with each other start about as large.
    let warm_up = Duration::from_secs(1);
    drive(&coalesced, &["hot".to_string()], 4, warm_up, "warm").await;
    for (campaign, _, _) in &routing {
        drive(&coalesced, &[campaign.to_string()], 4, warm_up, "warm").await;
    }
    drive(&one_by_one, &["hot-single".to_string()], 4, warm_up, "warm").await;
    // BENCH_CALLERS (e.g. "1" or "8,32") runs only those caller counts; the summary then has only their rows.
    let callers_list: Vec<usize> = std::env::var("BENCH_CALLERS")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| CALLERS.to_vec());
    for callers in callers_list {
        settle(&seeded).await;
        let mut today = drive(&coalesced, &["hot".to_string()], callers, duration, "hot").await;
        let baseline = today.rate();
        println!(
            "{}",
            today.row(
                "service, one hot campaign (today's path: round-robin, no capacity)",
                callers,
                baseline
            )
        );
        let mut hot_routing = None;
        for (campaign, what, _) in &routing {
            settle(&seeded).await;
            let mut row = drive(
                &coalesced,
                &[campaign.to_string()],
                callers,
                duration,
                "hot",
            )
            .await;
            println!("{}", row.row(what, callers, baseline));
            if *campaign == "hot-capacity" {
                hot_routing = Some(row);
            }
        }
        settle(&seeded).await;
        let mut row = drive(
            &one_by_one,
            &["hot-single".to_string()],
            callers,
            duration,
            "single",
        )
        .await;
        println!(
            "{}",
            row.row(
                "service, one hot campaign, no coalescing",
                callers,
                baseline
            )
        );
        settle(&seeded).await;
        let mut many_row = drive(&coalesced, &many, callers, duration, "many").await;
        println!(
            "{}",
            many_row.row(
                &format!(
                    "service, {MANY_CAMPAIGNS} campaigns ({AWAY} AWAY, default_capacity {LOOSE_CAPACITY})"
                ),
                callers,
                baseline
            )
        );
        settle(&seeded).await;
        let script = scripts.join("auto_assign_transaction.sql");
        let mut row = pgbench(&pg_target, &schema, &script, "pg-tx", callers, duration);
        println!(
            "{}",
            row.row(
                "pgbench, per-trigger transaction, one hot campaign",
                callers,
                baseline
            )
        );
        settle(&seeded).await;
        let script = scripts.join("auto_assign_one_statement.sql");
        let mut pg_one = pgbench(&pg_target, &schema, &script, "pg-one", callers, duration);
        println!(
            "{}",
            pg_one.row(
                "pgbench, one statement, one hot campaign",
                callers,
                baseline
            )
        );
        settle(&seeded).await;
        let mut pg_many =
            pgbench_scripts(&pg_target, &schema, &many_scripts, &[], callers, duration);
        println!(
            "{}",
            pg_many.row(
                &format!("pgbench, one statement, a random one of {MANY_CAMPAIGNS} campaigns"),
                callers,
                baseline
            )
        );
        settle(&seeded).await;
        let mut pg_many_tx = pgbench_scripts(
            &pg_target,
            &schema,
            &many_tx_scripts,
            &[],
            callers,
            duration,
        );
        println!(
            "{}",
            pg_many_tx.row(
                &format!(
                    "pgbench, per-trigger transaction, a random one of {MANY_CAMPAIGNS} campaigns"
                ),
                callers,
                baseline
            )
        );
        settle(&seeded).await;
        let mut pg_many_pipelined = pgbench_scripts(
            &pg_target,
            &schema,
            &many_pipelined_scripts,
            &[],
            callers,
            duration,
        );
        println!(
            "{}",
            pg_many_pipelined.row(
                &format!(
                    "pgbench, per-trigger transaction in two pipelined round trips, a random one of \
                     {MANY_CAMPAIGNS} campaigns"
                ),
                callers,
                baseline
            )
        );
        floors.push(floor_line(
            callers,
            &mut pg_many_tx,
            &mut pg_many_pipelined,
            &mut pg_many,
        ));
        let mut transport = drive_health(&coalesced, callers, duration).await;
        println!(
            "{}",
            transport.row(
                "service, grpc.health.v1 Check (no database: the transport's floor)",
                callers,
                baseline
            )
        );
        summary.add(
            &format!("auto-assign {MANY_CAMPAIGNS} campaigns c{callers}"),
            many_row,
            pg_many,
        );
        if callers >= 8 {
            let hot = hot_routing.expect("the routing runs");
            summary.add(&format!("auto-assign hot c{callers}"), hot, pg_one);
        }
    }

    // Manual assignment at 32 callers, beside pgbench's lock-update-event transaction.
    let callers = 32;
    settle(&seeded).await;
    let mut manual = drive_manual(&coalesced, callers, duration).await;
    println!(
        "{}",
        manual.row(
            "service, AssignConversation (manual, admin)",
            callers,
            manual.rate()
        )
    );
    settle(&seeded).await;
    let script = scripts.join("manual_assign_transaction.sql");
    let mut pg_manual = pgbench(&pg_target, &schema, &script, PG_MANUAL, callers, duration);
    println!(
        "{}",
        pg_manual.row(
            "pgbench, manual assign transaction (lock, update, event)",
            callers,
            manual.rate()
        )
    );
    settle(&seeded).await;
    let script = scripts_dir.join("service_manual_statements.sql");
    std::fs::write(&script, service_manual_script()).unwrap();
    let mut pg_service = pgbench(
        &pg_target,
        &schema,
        &script,
        PG_SERVICE_MANUAL,
        callers,
        duration,
    );
    println!(
        "{}",
        pg_service.row(
            "pgbench, the service's own manual statements (lock with grants and users, write with queue clean-up)",
            callers,
            manual.rate()
        )
    );
    println!();
    for floor in floors {
        println!("{floor}");
    }
    println!(
        "Manual assignment at {callers} callers: the service's statements alone run at {:.2} of pgbench's \
         plain transaction; the service at {:.2} of its own statements.",
        pg_service.rate() / pg_manual.rate(),
        manual.rate() / pg_service.rate()
    );
    summary.add("manual assign c32", manual, pg_manual);

    // Exact fairness, whatever the load: per-organizer counts of each hot campaign differ by at most one
    // (over the organizers who were AVAILABLE, in the routing campaigns).
    println!();
    for campaign in [
        "hot",
        "hot-away",
        "hot-capacity",
        "hot-balanced",
        "hot-single",
        "pg-tx",
        "pg-one",
    ] {
        let (min, max) = assignment_spread(&seeded, campaign).await;
        println!("- {campaign}: per-organizer assignments between {min} and {max}");
    }
    let _ = std::fs::remove_dir_all(&scripts_dir);
    summary.print();
    bench_schema.drop_schema().await;
}
