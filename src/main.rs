use std::process::ExitCode;

use assignment_service::app::{self, ServeOptions};
use assignment_service::auth::{Tokens, check_exposure};
use assignment_service::config::{Command, Config};
use assignment_service::embedded_pg::EmbeddedPostgres;
use assignment_service::observability;
use assignment_service::store::Store;
use assignment_service::telemetry;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::HealthCheck {
        endpoint,
        service,
        ca_cert,
        client_cert,
        client_key,
    }) = &config.command
    {
        let tls = app::ProbeTls {
            ca_cert: ca_cert.as_deref(),
            client_cert: client_cert.as_deref(),
            client_key: client_key.as_deref(),
        };
        return match app::health_check(endpoint, service, tls).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("NOT_SERVING");
                ExitCode::FAILURE
            }
            Err(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
        };
    }
    telemetry::init(config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("assignment-service: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let tokens = match &config.tokens_file {
        Some(path) => Tokens::load(path)?,
        None => Tokens::default(),
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(app::tls_config(cert, key, config.tls_client_ca.as_deref())?)
        }
        _ => None,
    };
    let mutual_tls = config.tls_client_ca.is_some();
    if let Some(warning) = check_exposure(
        &tokens,
        mutual_tls,
        config.listen_addr,
        config.allow_unauthenticated,
    )? {
        tracing::warn!("{warning}");
    }
    // Bind first: a taken port should fail before a database is started for nothing.
    let listener = app::bind(config.listen_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen_addr))?;
    // Held until the server has drained, then dropped: that stops the private cluster.
    let mut embedded = None;
    let database_url = match &config.database_url {
        Some(url) => url.clone(),
        None => {
            let data_dir = config.data_dir.clone();
            let cluster =
                tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data_dir, &[]))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            tracing::info!(
                data_dir = %cluster.data_dir().display(),
                port = cluster.port(),
                "DATABASE_URL is not set: started a private PostgreSQL"
            );
            let url = cluster.url("postgres");
            embedded = Some(cluster);
            url
        }
    };
    observability::install(config.metrics_addr)?;
    let store = Store::connect_with(&database_url, config.pool_size, config.statement_timeout)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot apply database migrations: {e}"))?;
    tracing::info!(addr = %config.listen_addr, metrics = %config.metrics_addr, "serving gRPC");
    let options = ServeOptions {
        health_check_interval: config.health_check_interval,
        auto_assign_max_batch: config.auto_assign_max_batch,
        trigger_retention: config.trigger_retention,
        tokens,
        max_concurrent_calls: config.max_concurrent_calls,
        call_timeout: config.call_timeout,
        max_message_bytes: config.max_message_bytes,
        tls,
    };
    app::serve(store.clone(), listener, options, app::shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    store.pool().close().await;
    drop(embedded);
    Ok(())
}
