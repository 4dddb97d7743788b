use std::process::ExitCode;

use assignment_service::config::{Command, Config};
use assignment_service::probe::{ProbeTls, health_check};
use assignment_service::{app, telemetry};
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
        let tls = ProbeTls {
            ca_cert: ca_cert.as_deref(),
            client_cert: client_cert.as_deref(),
            client_key: client_key.as_deref(),
        };
        return match health_check(endpoint, service, tls).await {
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
    let telemetry = telemetry::init(config.log_format);
    let served = match app::build(&config).await {
        Ok(app) => app.serve(app::shutdown_signal()).await,
        Err(message) => Err(message),
    };
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Once, through the log (stderr), in the log's format.
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}
