//! Prometheus metrics: what the service records, and the `/metrics` endpoint on its own port.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::store::Store;

pub const CALLS: &str = "grpc_server_handled_total";
pub const CALL_SECONDS: &str = "grpc_server_handling_seconds";
pub const POOL_CONNECTIONS: &str = "db_pool_connections";
pub const LOCK_WAIT_SECONDS: &str = "auto_assign_lock_wait_seconds";
pub const AUTO_ASSIGN_BATCH: &str = "auto_assign_batch_size";
pub const BULK_ITEMS: &str = "bulk_items_total";
pub const SHED_CALLS: &str = "grpc_server_shed_total";

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the global recorder and serves `/metrics` on `addr` from the current runtime.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(AUTO_ASSIGN_BATCH.into()), BATCH_BUCKETS)
        })
        .and_then(|b| b.build())
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    metrics::set_global_recorder(recorder).map_err(|e| format!("metrics recorder: {e}"))?;
    tokio::spawn(async move {
        if let Err(err) = exporter.await {
            tracing::error!(error = ?err, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

/// Publishes the database pool's use every `interval`.
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
