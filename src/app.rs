//! Assembles the gRPC server: the three services, health, reflection, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::Tokens;
use crate::auto_assign::{AutoAssigner, DEFAULT_MAX_BATCH};
use crate::grpc::middleware::CallLayer;
use crate::grpc::{AccessGroupApi, AssignmentApi, DirectoryApi};
use crate::observability::watch_pool;
use crate::pb::access_group_service_server::AccessGroupServiceServer;
use crate::pb::assignment_service_server::AssignmentServiceServer;
use crate::pb::directory_service_server::DirectoryServiceServer;
use crate::store::Store;

/// Health names: "" (the whole server) and each service.
const HEALTH_NAMES: [&str; 4] = [
    "",
    <DirectoryServiceServer<DirectoryApi> as NamedService>::NAME,
    <AssignmentServiceServer<AssignmentApi> as NamedService>::NAME,
    <AccessGroupServiceServer<AccessGroupApi> as NamedService>::NAME,
];

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub health_check_interval: Duration,
    /// Most auto-assign triggers of one campaign coalesced into one transaction.
    pub auto_assign_max_batch: usize,
    /// How long auto-assign trigger ids are remembered.
    pub trigger_retention: Duration,
    /// Calling services' tokens; empty accepts every caller.
    pub tokens: Tokens,
    /// Calls running at once before new ones are shed with RESOURCE_EXHAUSTED.
    pub max_concurrent_calls: usize,
    /// The longest a call may run; a shorter `grpc-timeout` from the caller wins.
    pub call_timeout: Duration,
    /// The largest request message accepted.
    pub max_message_bytes: usize,
    /// TLS (and, with a client CA, mutual TLS); `None` serves cleartext HTTP/2.
    pub tls: Option<ServerTlsConfig>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            health_check_interval: Duration::from_secs(5),
            auto_assign_max_batch: DEFAULT_MAX_BATCH,
            trigger_retention: Duration::from_secs(7 * 86_400),
            tokens: Tokens::default(),
            max_concurrent_calls: 512,
            call_timeout: Duration::from_secs(30),
            max_message_bytes: 4 * 1024 * 1024,
            tls: None,
        }
    }
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` resolves; then health turns NOT_SERVING, new calls are refused and in-flight
/// calls finish before this returns.
pub async fn serve(
    store: Store,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_all(&health, ServingStatus::Serving).await;
    let watcher = tokio::spawn(watch_database(
        store.clone(),
        health.clone(),
        options.health_check_interval,
    ));
    let pruner = tokio::spawn(prune_triggers(store.clone(), options.trigger_retention));

    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    // grpcurl 1.8 and other older clients speak only v1alpha.
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");

    let drain_health = health.clone();
    let pool_watcher = tokio::spawn(watch_pool(store.clone(), Duration::from_secs(5)));
    let max = options.max_message_bytes;
    let mut builder = Server::builder();
    if let Some(tls) = options.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    let result = builder
        .timeout(options.call_timeout)
        .layer(CallLayer::new(
            options.tokens.clone(),
            options.max_concurrent_calls,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            DirectoryServiceServer::new(DirectoryApi::new(store.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            AssignmentServiceServer::new(AssignmentApi::new(
                store.clone(),
                AutoAssigner::new(store.clone(), options.auto_assign_max_batch),
            ))
            .max_decoding_message_size(max),
        )
        .add_service(
            AccessGroupServiceServer::new(AccessGroupApi::new(store))
                .max_decoding_message_size(max),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            tracing::info!("shutting down: health NOT_SERVING, finishing in-flight calls");
            watcher.abort();
            pruner.abort();
            pool_watcher.abort();
            set_all(&drain_health, ServingStatus::NotServing).await;
        })
        .await;
    tracing::info!("server stopped");
    result
}

/// Our services, health, and the google.rpc error details, so grpcurl can decode every error's details.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

async fn set_all(health: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        health.set_service_status(name, status).await;
    }
}

/// Reports NOT_SERVING while the database does not answer, SERVING again once it does.
async fn watch_database(store: Store, health: HealthReporter, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    let mut healthy = true;
    loop {
        ticker.tick().await;
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(2), store.ping()).await,
            Ok(Ok(()))
        );
        if ok != healthy {
            healthy = ok;
            if ok {
                tracing::info!("database reachable again: SERVING");
                set_all(&health, ServingStatus::Serving).await;
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
                set_all(&health, ServingStatus::NotServing).await;
            }
        }
    }
}

/// Hourly, forgets auto-assign triggers past their retention. Every replica does it; the deletes are
/// idempotent.
async fn prune_triggers(store: Store, retention: Duration) {
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    loop {
        ticker.tick().await;
        match store.prune_triggers(retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned old auto-assign trigger records"),
            Err(err) => tracing::warn!(error = %err, "could not prune auto-assign trigger records"),
        }
    }
}

/// Reads PEM files into a TLS configuration; with `client_ca`, clients must present a certificate it signed.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<ServerTlsConfig, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

/// TLS material for [`health_check`] against an `https://` endpoint.
#[derive(Debug, Clone, Default)]
pub struct ProbeTls<'a> {
    pub ca_cert: Option<&'a std::path::Path>,
    pub client_cert: Option<&'a std::path::Path>,
    pub client_key: Option<&'a std::path::Path>,
}

/// Asks the server at `endpoint` whether `service` ("" = the whole server) is SERVING.
pub async fn health_check(
    endpoint: &str,
    service: &str,
    tls: ProbeTls<'_>,
) -> Result<bool, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut builder = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| format!("bad endpoint {endpoint:?}: {e}"))?;
    if endpoint.starts_with("https://") {
        let ca = tls.ca_cert.ok_or_else(|| {
            "an https:// endpoint needs --ca-cert to verify the server".to_string()
        })?;
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (tls.client_cert, tls.client_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        builder = builder
            .tls_config(config)
            .map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = builder
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("cannot reach {endpoint}: {e}"))?;
    let reply = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|e| format!("health check failed: {e}"))?;
    Ok(reply.into_inner().status()
        == tonic_health::pb::health_check_response::ServingStatus::Serving)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
