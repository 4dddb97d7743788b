//! Assembles the service from its configuration: [`build`] loads tokens and TLS, binds the listeners,
//! starts or connects the database and migrates it; [`App::serve`] runs the gRPC services, health,
//! reflection and `/metrics` until shutdown. `main.rs` and the integration tests both start it this way.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{CallingServices, check_exposure};
use crate::config::Config;
use crate::embedded_pg::EmbeddedPostgres;
use crate::grpc::middleware::{CallLayer, Limits, Phase};
use crate::grpc::reflection;
use crate::grpc::{AccessGroupApi, AssignmentApi, DirectoryApi};
use crate::observability::{DATABASE_UP, serve_metrics, watch_pool};
use crate::pb::access_group_service_server::AccessGroupServiceServer;
use crate::pb::assignment_service_server::AssignmentServiceServer;
use crate::pb::directory_service_server::DirectoryServiceServer;
use crate::relay::{self, Relay, RelayConfig};
use crate::service::AfterCommit;
use crate::service::agenda::{Agenda, Agendas};
use crate::service::auto_assign::{Batching, Coalescer, prune_triggers};
use crate::service::feed::Feed;
use crate::service::notices;
use crate::store::Store;

/// Health names: "" (the whole server) and each service.
const HEALTH_NAMES: [&str; 4] = [
    "",
    <DirectoryServiceServer<DirectoryApi> as NamedService>::NAME,
    <AssignmentServiceServer<AssignmentApi> as NamedService>::NAME,
    <AccessGroupServiceServer<AccessGroupApi> as NamedService>::NAME,
];

/// How long after the drain timeout cancelled calls get to end before the server stops regardless.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// A service ready to serve: listeners bound, database migrated.
pub struct App {
    config: Config,
    callers: CallingServices,
    tls: Option<TlsAcceptor>,
    listener: TcpListener,
    metrics_listener: TcpListener,
    store: Store,
    /// The private PostgreSQL when no database URL was given; dropping it stops the cluster.
    embedded: Option<EmbeddedPostgres>,
}

/// Builds the service from `config`. Fails early, before any database is started, on a bad tokens file,
/// bad TLS files, an unsafe exposure or a taken port.
pub async fn build(config: &Config) -> Result<App, String> {
    let callers = match &config.tokens_file {
        Some(path) => CallingServices::load(path)?,
        None => CallingServices::default(),
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_acceptor(
            cert,
            key,
            config.tls_client_ca.as_deref(),
        )?),
        _ => None,
    };
    if let Some(warning) = check_exposure(
        &callers,
        config.tls_client_ca.is_some(),
        config.listen_addr,
        config.allow_unauthenticated,
    )? {
        tracing::warn!("{warning}");
    }
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen_addr))?;
    let metrics_listener = TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|e| format!("cannot serve metrics on {}: {e}", config.metrics_addr))?;
    let (database_url, embedded) = match &config.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let data_dir = config.data_dir.clone();
            let cluster =
                tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data_dir, &[]))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            tracing::info!(
                data_dir = %cluster.data_dir().display(),
                socket_dir = %cluster.socket_dir().display(),
                port = cluster.port(),
                "DATABASE_URL is not set: started a private PostgreSQL on a Unix socket"
            );
            (cluster.url("postgres"), Some(cluster))
        }
    };
    let store = Store::connect(&database_url, config.pool_size, config.statement_timeout)
        .await
        .map_err(|e| e.to_string())?;
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot apply database migrations: {e}"))?;
    // Read now, so no call waits for it.
    store
        .opaque_secret()
        .await
        .map_err(|e| format!("cannot read the opaque ids' secret: {e}"))?;
    Ok(App {
        config: config.clone(),
        callers,
        tls,
        listener,
        metrics_listener,
        store,
        embedded,
    })
}

impl App {
    /// The address gRPC is served on (the port the OS picked, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// The address `/metrics` is served on.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener
            .local_addr()
            .expect("a bound listener")
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` resolves; then the drain: health turns NOT_SERVING (and keeps answering, on
    /// new connections too), new calls are refused with UNAVAILABLE, and in-flight calls may finish for up
    /// to the drain timeout. Once they have (or it passed), the listener closes, calls still open are
    /// cancelled and this returns (at most [`CANCEL_GRACE`] later). The database pool is closed and a
    /// private cluster stopped.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), String> {
        let App {
            config,
            callers,
            tls,
            listener,
            metrics_listener,
            store,
            embedded,
        } = self;
        tracing::info!(
            addr = %listener.local_addr().map_err(|e| e.to_string())?,
            metrics = %metrics_listener.local_addr().map_err(|e| e.to_string())?,
            "serving gRPC"
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        set_all(&health, ServingStatus::Serving).await;
        let feed = Feed::new(
            store.clone(),
            config.feed_retention,
            config.feed_read_concurrency,
        );
        let coalescer = Coalescer::new(
            store.clone(),
            feed.clone(),
            Batching {
                max_batch: config.auto_assign_max_batch,
                max_backlog: config.auto_assign_max_queue,
                concurrency: config.auto_assign_concurrency(),
                single_campaign: config.single_campaign_transactions,
            },
        );
        let after = AfterCommit::new(coalescer.clone(), feed.clone());
        let agendas = Agendas::new(config.single_campaign_transactions);
        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let background = [
            tokio::spawn(watch_database(
                store.clone(),
                health.clone(),
                config.health_check_interval,
                phase_rx.clone(),
            )),
            tokio::spawn(prune_old_triggers(store.clone(), config.trigger_retention)),
            tokio::spawn(watch_pool(store.clone(), Duration::from_secs(5))),
            tokio::spawn(serve_metrics(metrics_listener)),
            tokio::spawn(sweep_waiting(
                store.clone(),
                coalescer.clone(),
                feed.clone(),
                config.waiting_sweep_interval,
            )),
            tokio::spawn(notices::listen(
                store.clone(),
                feed.clone(),
                agendas.clone(),
            )),
            tokio::spawn(reread_agendas(
                agendas.clone(),
                config.agenda_sweep_interval,
            )),
            tokio::spawn(fire_reply_timers(
                store.clone(),
                after.clone(),
                agendas.reply_timers.clone(),
                config.reply_timer_interval,
            )),
            tokio::spawn(pass_shift_boundaries(
                store.clone(),
                after.clone(),
                agendas.shift_boundaries.clone(),
                config.shift_boundary_interval,
            )),
        ];
        // The relay to NATS, when configured: its own task, so NATS being away never holds up a call.
        // Time-ordered: the replica relaying by preference (the smallest live holder) is the oldest, so a
        // replica that starts later never takes the relay from one that runs.
        let relay_holder = uuid::Uuid::now_v7().to_string();
        let relay = match relay_config(&config) {
            Some(relay_config) => {
                let relay = Relay::connect(
                    store.clone(),
                    relay_config,
                    relay_holder.clone(),
                    agendas.heads_moved.clone(),
                )
                .await?;
                let lag = tokio::spawn(relay::report_lag(store.clone(), RELAY_LAG_INTERVAL));
                Some((tokio::spawn(relay.run(health.clone())), lag))
            }
            None => None,
        };
        let max = config.max_message_bytes;
        let calls = CallLayer::new(
            callers,
            Limits {
                max_in_flight: config.max_concurrent_calls,
                per_caller: config.max_calls_per_caller,
                per_actor: config.max_calls_per_actor,
                read_timeout: config.request_read_timeout,
            },
            phase_rx,
        );
        let drained = calls.clone();
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let serve = Server::builder()
            .timeout(config.call_timeout)
            // Pings find peers that vanished without closing (their streams would hold slots forever).
            .http2_keepalive_interval(Some(config.keepalive_interval))
            .http2_keepalive_timeout(Some(config.keepalive_timeout))
            .layer(calls)
            .add_service(health_service)
            .add_service(reflection::v1::serve(
                reflection().build_v1().expect("valid descriptors"),
            ))
            // grpcurl 1.8 and other older clients speak only v1alpha.
            .add_service(reflection::v1alpha::serve(
                reflection().build_v1alpha().expect("valid descriptors"),
            ))
            .add_service(
                DirectoryServiceServer::new(DirectoryApi::new(store.clone(), after.clone()))
                    .max_decoding_message_size(max),
            )
            .add_service(
                AssignmentServiceServer::new(AssignmentApi::new(
                    store.clone(),
                    coalescer.clone(),
                    feed.clone(),
                    after.clone(),
                    config.stream_idle_timeout,
                ))
                .max_decoding_message_size(max),
            )
            .add_service(
                AccessGroupServiceServer::new(AccessGroupApi::new(store.clone(), after.clone()))
                    .max_decoding_message_size(max),
            )
            .serve_with_incoming_shutdown(
                crate::listener::incoming(listener, tls, config.handshake_timeout),
                async {
                    let _ = closed.await;
                },
            );
        tokio::pin!(serve);
        // The listener stays open through the drain, so probes on new connections see NOT_SERVING and
        // new calls get UNAVAILABLE (retry elsewhere) rather than a refused connection.
        let drain = async {
            shutdown.await;
            tracing::info!(
                drain_timeout = ?config.drain_timeout,
                "shutting down: health NOT_SERVING, refusing new calls, finishing in-flight calls"
            );
            phase.send_replace(Phase::Draining);
            set_all(&health, ServingStatus::NotServing).await;
            match tokio::time::timeout(config.drain_timeout, drained.idle()).await {
                Ok(()) => tracing::info!("in-flight calls finished: closing"),
                Err(_) => {
                    tracing::warn!("drain timeout passed: cancelling the calls still running")
                }
            }
        };
        let result = tokio::select! {
            result = &mut serve => result,
            () = drain => {
                // Calls still open (past the drain timeout, or watching health) are ended with their
                // status and their connections close; a peer that does not read is not waited for.
                phase.send_replace(Phase::Cancelling);
                let _ = close.send(());
                match tokio::time::timeout(CANCEL_GRACE, &mut serve).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("connections still open after cancelling their calls: leaving them");
                        Ok(())
                    }
                }
            }
        };
        for task in background {
            task.abort();
        }
        if let Some((relay, lag)) = relay {
            relay.abort();
            lag.abort();
            relay::release(&store, &relay_holder, config.single_campaign_transactions).await;
        }
        tracing::info!("server stopped");
        // Connections held by calls left behind are not waited for.
        let _ = tokio::time::timeout(CANCEL_GRACE, store.pool().close()).await;
        drop(embedded);
        result.map_err(|e| format!("server error: {e}"))
    }
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

/// How long the health check waits for the database to answer on its connection, before it tries a new
/// one (`Store::check_database`).
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports NOT_SERVING (and `db_up` 0) while the database does not answer the health check's own
/// connection, SERVING again once it does (but never again once the server drains). A pool busy with
/// calls is not an outage.
async fn watch_database(
    store: Store,
    health: HealthReporter,
    interval: Duration,
    phase: watch::Receiver<Phase>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        ticker.tick().await;
        let answer = store.check_database(HEALTH_CHECK_TIMEOUT).await;
        metrics::gauge!(DATABASE_UP).set(if answer.is_ok() { 1.0 } else { 0.0 });
        if answer.is_ok() != healthy && *phase.borrow() == Phase::Serving {
            healthy = answer.is_ok();
            match answer {
                Ok(()) => {
                    tracing::info!(
                        database = store.address(),
                        "database reachable again: SERVING"
                    );
                    set_all(&health, ServingStatus::Serving).await;
                }
                Err(error) => {
                    tracing::warn!(
                        database = store.address(),
                        error,
                        "database unreachable: NOT_SERVING, calls refused at once until it answers"
                    );
                    set_all(&health, ServingStatus::NotServing).await;
                }
            }
        }
    }
}

/// Every `interval`, drains the campaigns whose waiting conversations an event-driven drain may have missed
/// (a replica that died between a freeing commit and its drain), and publishes the queue's gauges. Every
/// replica does it; drains run under each campaign's lock, so they never assign twice.
/// The same sweep numbers events a replica that died left unnumbered, for the feed, and folds the load
/// changes of campaigns whose batches do not read loads, so they never pile up.
async fn sweep_waiting(store: Store, coalescer: Coalescer, feed: Feed, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        if let Err(err) = crate::service::auto_assign::sweep(&store, &coalescer).await {
            tracing::warn!(error = %err, "could not sweep the waiting queues");
        }
        if let Err(err) = crate::service::auto_assign::fold_loads(&store).await {
            tracing::warn!(error = %err, "could not fold organizer load changes");
        }
        feed.sweep().await;
    }
}

/// Every `interval`, reads this replica's agendas of timed work again whole: a safety net under the
/// notifications that keep them (`service::agenda`).
async fn reread_agendas(agendas: Agendas, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    // The first tick is at once, and the agendas start by reading everything anyway.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        agendas.touch_all();
    }
}

/// Every `interval`, fires the silence timers this replica's agenda has due, on every replica (each fires
/// once: under its campaign's lock and its conversation's row lock).
async fn fire_reply_timers(store: Store, after: AfterCommit, agenda: Agenda, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(err) = crate::service::replies::fire_due_timers(&store, &after, &agenda).await {
            tracing::warn!(error = %err, "could not fire silence timers");
        }
    }
}

/// Every `interval`, acts on the shift starts and ends this replica's agenda has due (see
/// `service::shifts`): a start drains the campaign's queue, an end applies `on_unavailable`. Each boundary
/// is acted on once across replicas (under its campaign's lock).
async fn pass_shift_boundaries(
    store: Store,
    after: AfterCommit,
    agenda: Agenda,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(err) = crate::service::shifts::pass_due_boundaries(&store, &after, &agenda).await
        {
            tracing::warn!(error = %err, "could not act on shift boundaries");
        }
    }
}

/// How often each replica publishes the relay's lag.
const RELAY_LAG_INTERVAL: Duration = Duration::from_secs(2);

/// The relay's settings, if `--nats-url` is set.
fn relay_config(config: &Config) -> Option<RelayConfig> {
    Some(RelayConfig {
        url: config.nats_url.clone()?,
        stream: config.nats_stream.clone(),
        subject_prefix: config.nats_subject_prefix.clone(),
        duplicate_window: config.nats_duplicate_window,
        max_age: config.nats_max_age,
        lease: config.relay_lease,
        interval: config.relay_interval,
        single_campaign: config.single_campaign_transactions,
    })
}

/// Hourly, forgets auto-assign trigger ids past their retention. Every replica does it; the deletes are
/// idempotent.
async fn prune_old_triggers(store: Store, retention: Duration) {
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    loop {
        ticker.tick().await;
        match prune_triggers(&store, retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned old auto-assign trigger records"),
            Err(err) => tracing::warn!(error = %err, "could not prune auto-assign trigger records"),
        }
    }
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
