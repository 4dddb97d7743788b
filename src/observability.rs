//! Prometheus metrics: what the service records, and the `/metrics` endpoint each server serves.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::store::Store;

pub const CALLS: &str = "grpc_server_handled_total";
pub const CALL_SECONDS: &str = "grpc_server_handling_seconds";
pub const POOL_CONNECTIONS: &str = "db_pool_connections";
pub const LOCK_WAIT_SECONDS: &str = "auto_assign_lock_wait_seconds";
pub const AUTO_ASSIGN_BATCH: &str = "auto_assign_batch_size";
pub const BULK_ITEMS: &str = "bulk_items_total";
pub const SHED_CALLS: &str = "grpc_server_shed_total";
pub const WAITING_DRAINED: &str = "auto_assign_waiting_drained_total";
pub const WAITING_CONVERSATIONS: &str = "auto_assign_waiting_conversations";
pub const WAITING_OLDEST_SECONDS: &str = "auto_assign_waiting_oldest_seconds";
pub const DRAINS: &str = "auto_assign_drains_total";
/// How long a conversation waited in the queue before a drain assigned it.
pub const WAITING_SECONDS: &str = "auto_assign_waiting_seconds";
/// How long after its write (its transaction's start) an event reached this replica's watchers.
pub const FEED_LAG_SECONDS: &str = "feed_delivery_lag_seconds";
/// 1 while the database answers this replica's health check (on its own connection), 0 while it does not.
pub const DATABASE_UP: &str = "db_up";
/// Replies overdue, by what the campaign did (`action`: reassign, reassign_untimed, notify).
pub const REPLIES_OVERDUE: &str = "replies_overdue_total";
/// How long after its due time a silence timer fired.
pub const REPLY_TIMER_LATENESS_SECONDS: &str = "reply_timer_lateness_seconds";
/// How long a member waited for a reply: from their first unanswered message to the reply that ended it.
pub const TIME_TO_REPLY_SECONDS: &str = "time_to_reply_seconds";
/// Events the NATS relay published and JetStream acknowledged.
pub const RELAY_PUBLISHED: &str = "relay_published_total";
/// Publishes JetStream refused for what they expected to follow (`reason`: `stale_position`, the relay then
/// resyncs; `burst_interleaved`, another publisher wrote into a burst, sent again).
pub const RELAY_REJECTED: &str = "relay_rejected_total";
/// Per campaign (`campaign`), events the feed holds that the relay has not published yet.
pub const RELAY_LAG_EVENTS: &str = "relay_lag_events";
/// Per campaign (`campaign`), how long ago the oldest event not yet published was written.
pub const RELAY_LAG_SECONDS: &str = "relay_lag_seconds";
/// Shift boundaries acted on (a start drains the queue, an end applies on_unavailable), by what the
/// organizer's shift became (`state`: on, off).
pub const SHIFT_BOUNDARIES: &str = "shift_boundaries_total";
/// How long after a shift started or ended the boundary worker acted on it.
pub const SHIFT_BOUNDARY_LATENESS_SECONDS: &str = "shift_boundary_lateness_seconds";

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Members wait minutes to hours for a reply.
const REPLY_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// The process's metrics recorder, installed on first use (metrics are global to a process).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(AUTO_ASSIGN_BATCH.into()), BATCH_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(TIME_TO_REPLY_SECONDS.into()), REPLY_BUCKETS)
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a host embedding the service): ours then stays empty.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve_metrics(listener: TcpListener) {
    let handle = recorder();
    let router = Router::new().route("/metrics", get(move || async move { handle.render() }));
    if let Err(err) = axum::serve(listener, router).await {
        tracing::error!(error = %err, "the metrics endpoint stopped");
    }
}

/// Publishes the database pool's use every `interval` (whether the database answers is the health
/// check's: `app::watch_database`).
pub async fn watch_pool(store: Store, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let pool = store.pool();
        let idle = pool.num_idle() as f64;
        let size = f64::from(pool.size());
        metrics::gauge!(POOL_CONNECTIONS, "state" => "idle").set(idle);
        metrics::gauge!(POOL_CONNECTIONS, "state" => "in_use").set(size - idle);
    }
}
