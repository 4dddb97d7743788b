//! The `health-check` subcommand: asks a running server whether it is SERVING, for container probes.

use std::path::Path;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// TLS material for an `https://` endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeTls<'a> {
    pub ca_cert: Option<&'a Path>,
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
}

/// Asks the server at `endpoint` whether `service` ("" = the whole server) is SERVING.
pub async fn health_check(
    endpoint: &str,
    service: &str,
    tls: ProbeTls<'_>,
) -> Result<bool, String> {
    let mut builder = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| format!("bad endpoint {endpoint:?}: {e}"))?;
    if endpoint.starts_with("https://") {
        let ca = tls
            .ca_cert
            .ok_or("an https:// endpoint needs --ca-cert to verify the server")?;
        let identity = tls.client_cert.zip(tls.client_key);
        let config = crate::tls::client_config(ca, identity)?;
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
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|e| format!("health check failed: {e}"))?;
    Ok(reply.into_inner().status() == ServingStatus::Serving)
}
