//! Configuration from flags and environment variables: the one place every default is written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Asks a running server for its health and exits 0 when it is SERVING (for container health checks).
    HealthCheck {
        /// The server to ask.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        endpoint: String,
        /// The service to ask about; empty means the whole server.
        #[arg(long, default_value = "")]
        service: String,
        /// PEM CA to verify an `https://` endpoint's certificate with.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// PEM client certificate, for a server that requires mutual TLS (with --client-key).
        #[arg(long, requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// PEM key of --client-cert.
        #[arg(long, requires = "client_cert")]
        client_key: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Parser)]
#[command(name = "assignment-service", version, about)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to serve gRPC on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    pub listen_addr: SocketAddr,

    /// PostgreSQL URL. Without it the service runs a private PostgreSQL under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where the private PostgreSQL keeps its data when DATABASE_URL is not set.
    #[arg(long, env = "DATA_DIR", default_value = ".data/postgres")]
    pub data_dir: PathBuf,

    /// Most database connections this replica holds.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Most auto-assign triggers coalesced into one transaction, of one campaign or several (1 = no
    /// coalescing).
    #[arg(long, env = "AUTO_ASSIGN_MAX_BATCH", default_value_t = 256,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub auto_assign_max_batch: usize,

    /// Every transaction touches one campaign: for a PostgreSQL distributed by campaign (docs/scaling.md).
    /// An auto-assign batch then coalesces one campaign's triggers only; the default (off) batches
    /// several campaigns, which is fastest on one PostgreSQL.
    #[arg(long, env = "SINGLE_CAMPAIGN_TRANSACTIONS", default_value_t = false)]
    pub single_campaign_transactions: bool,

    /// Most auto-assign batches this replica runs at once (default 2, or 8 with
    /// --single-campaign-transactions, whose batches cannot share a transaction across campaigns). Fewer
    /// means larger batches (less work per trigger); more means less waiting while another batch holds the
    /// database. Read it through [`Config::auto_assign_concurrency`].
    #[arg(long = "auto-assign-concurrency", env = "AUTO_ASSIGN_CONCURRENCY",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub auto_assign_concurrency_flag: Option<usize>,

    /// Most auto-assign triggers of one campaign waiting for its next batch; more are refused with
    /// RESOURCE_EXHAUSTED (AUTO_ASSIGN_QUEUE_FULL).
    #[arg(long, env = "AUTO_ASSIGN_MAX_QUEUE", default_value_t = 4096,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub auto_assign_max_queue: usize,

    /// How often every replica looks for waiting conversations a drain missed (and publishes the queue's
    /// gauges), e.g. "5s". Drains are event-driven; this is the safety net.
    #[arg(long, env = "WAITING_SWEEP_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub waiting_sweep_interval: Duration,

    /// How often every replica fires the silence timers its agenda has due, e.g. "250ms" (a timer fires
    /// this much after its due time at most, plus the time to fire those before it).
    #[arg(long, env = "REPLY_TIMER_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub reply_timer_interval: Duration,

    /// NATS server(s) of the JetStream relay, e.g. "nats://127.0.0.1:4222": set, every campaign's feed is
    /// published to JetStream (docs/relay.md); unset, no relay.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// The JetStream stream the relay publishes to (made if missing).
    #[arg(long, env = "NATS_STREAM", default_value = "ASSIGNMENT_EVENTS")]
    pub nats_stream: String,

    /// The relay publishes a campaign's events to `<prefix>.<campaign>`.
    #[arg(
        long,
        env = "NATS_SUBJECT_PREFIX",
        default_value = "assignment.v1.events"
    )]
    pub nats_subject_prefix: String,

    /// The stream's duplicate window (when the relay makes the stream).
    #[arg(long, env = "NATS_DUPLICATE_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub nats_duplicate_window: Duration,

    /// How long the stream keeps a message (when the relay makes the stream); "0s": for ever.
    #[arg(long, env = "NATS_MAX_AGE", default_value = "7d", value_parser = parse_duration)]
    pub nats_max_age: Duration,

    /// How long a replica relays a campaign without renewing its lease; another takes it after that.
    #[arg(long, env = "RELAY_LEASE", default_value = "10s", value_parser = parse_duration)]
    pub relay_lease: Duration,

    /// How often each replica looks for campaigns with events to relay.
    #[arg(long, env = "RELAY_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub relay_interval: Duration,

    /// How often every replica acts on the shift starts and ends its agenda has due, e.g. "250ms" (a
    /// shift's start drains the queue, and its end applies on_unavailable, this much after it at most).
    #[arg(long, env = "SHIFT_BOUNDARY_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub shift_boundary_interval: Duration,

    /// How often every replica reads its whole agenda of timed work (silence timers, shift boundaries)
    /// again, e.g. "60s": a safety net under the commit notifications that keep it (docs/scaling.md).
    #[arg(long, env = "AGENDA_SWEEP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub agenda_sweep_interval: Duration,

    /// How long auto-assign trigger ids are remembered for deduplicating redeliveries, e.g. "7d".
    #[arg(long, env = "TRIGGER_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub trigger_retention: Duration,

    /// How far back a WatchAssignmentEvents cursor may resume, e.g. "7d": a cursor whose next event is
    /// older is refused with OUT_OF_RANGE (re-sync: read the state, watch from now). History is kept.
    #[arg(long, env = "FEED_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub feed_retention: Duration,

    /// Most database reads this replica's WatchAssignmentEvents streams make at once (opening, catching
    /// up); the rest wait their turn, so watchers hold at most this many of the pool's connections however
    /// many there are. Live events reach them without a read of their own.
    #[arg(long, env = "FEED_READ_CONCURRENCY", default_value_t = crate::service::feed::FEED_READS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub feed_read_concurrency: usize,

    /// File of calling services: one `name scope sha256-hex` (a bearer token's hash) or
    /// `name scope cert-sha256:hex` (a client certificate's fingerprint) per line; scope `system` or `user`.
    #[arg(long, env = "TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// PEM certificate chain to serve TLS with (with --tls-key).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA that client certificates must chain to: mutual TLS.
    #[arg(long, env = "TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Serve without tokens on a non-loopback address.
    #[arg(long, env = "ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Calls running at once before new ones are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_CONCURRENT_CALLS", default_value_t = 512)]
    pub max_concurrent_calls: usize,

    /// Calls (streams included) one calling service runs at once on this replica (its authenticated name;
    /// without tokens, its address); more are refused with RESOURCE_EXHAUSTED (FAIR_SHARE_EXHAUSTED), so
    /// one caller cannot take every slot.
    #[arg(long, env = "MAX_CALLS_PER_CALLER", default_value_t = 128,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_calls_per_caller: usize,

    /// Calls (streams included) one calling service runs at once for one actor (`x-actor-id` within a
    /// campaign); more are refused with RESOURCE_EXHAUSTED (FAIR_SHARE_EXHAUSTED).
    #[arg(long, env = "MAX_CALLS_PER_ACTOR", default_value_t = 32,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_calls_per_actor: usize,

    /// How long a call's request may take to arrive once its headers have: a unary request's whole body, a
    /// stream's first message, e.g. "5s". A slower one ends with DEADLINE_EXCEEDED (REQUEST_TOO_SLOW).
    #[arg(long, env = "REQUEST_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_read_timeout: Duration,

    /// A connection that has not completed its TLS handshake and sent the HTTP/2 preface this long after
    /// it was accepted is closed, e.g. "10s".
    #[arg(long, env = "HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// The longest a unary call may run, and a stream may take to send its first reply (a shorter
    /// grpc-timeout from the caller wins), e.g. "30s".
    #[arg(long, env = "CALL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub call_timeout: Duration,

    /// A stream that sends no request message for this long is ended with DEADLINE_EXCEEDED
    /// (STREAM_IDLE), e.g. "30s".
    #[arg(long, env = "STREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub stream_idle_timeout: Duration,

    /// On SIGTERM, how long calls still running may finish before they are cancelled and the process
    /// exits; keep it below the orchestrator's grace period, e.g. "25s".
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How often the server pings each HTTP/2 connection, to find peers that went away, e.g. "20s".
    #[arg(long, env = "KEEPALIVE_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// A connection whose peer does not answer a ping within this long is closed, e.g. "10s".
    #[arg(long, env = "KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    /// The longest one SQL statement may run, and a transaction may sit idle, e.g. "10s".
    #[arg(long, env = "STATEMENT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub statement_timeout: Duration,

    /// The largest request message accepted, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// How often to check the database for the health service, e.g. "5s".
    #[arg(long, env = "HEALTH_CHECK_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub health_check_interval: Duration,
}

impl Config {
    /// Most auto-assign batches a replica runs at once: the flag, or its default for the transaction mode.
    /// With one campaign per transaction, triggers of different campaigns no longer share a batch, so more
    /// batches run at once (measured: 32 callers over 32 campaigns, 621 calls/s at 2, 889 at 4, 941 at 8).
    pub fn auto_assign_concurrency(&self) -> usize {
        self.auto_assign_concurrency_flag
            .unwrap_or(if self.single_campaign_transactions {
                8
            } else {
                2
            })
    }
}

/// "250ms", "5s", "2m", "1h", "7d" or a bare number of seconds.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a duration like 250ms, 5s, 2m, 1h or 7d"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86_400)),
        _ => Err(format!("{value:?} has unit {unit:?}; use ms, s, m, h or d")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn defaults_listen_on_the_grpc_port_of_loopback() {
        let config = Config::try_parse_from(["assignment-service"]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn single_campaign_transactions_run_more_auto_assign_batches_at_once_unless_told() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(["assignment-service"].iter().chain(args))
                .unwrap()
                .auto_assign_concurrency()
        };
        if std::env::var_os("AUTO_ASSIGN_CONCURRENCY").is_none() {
            if std::env::var_os("SINGLE_CAMPAIGN_TRANSACTIONS").is_none() {
                assert_eq!(parse(&[]), 2);
            }
            assert_eq!(parse(&["--single-campaign-transactions"]), 8);
        }
        let told = [
            "--single-campaign-transactions",
            "--auto-assign-concurrency",
            "3",
        ];
        assert_eq!(parse(&told), 3);
    }
}
