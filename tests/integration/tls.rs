//! TLS, mutual TLS, and callers known by their client certificate.

use assignment_service::app;
use assignment_service::auth::{certificate_fingerprint, hash_token};
use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::pb::directory_service_client::DirectoryServiceClient;
use base64::Engine;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

const SYSTEM_TOKEN: &str = "sync-secret";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn path(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

/// The SHA-256 of the test client certificate's DER encoding, as the tokens file pins it.
fn client_fingerprint() -> String {
    let pem = std::fs::read_to_string(fixture("client.pem")).unwrap();
    let body: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    certificate_fingerprint(&der)
}

/// A tokens file holding `lines`.
fn callers_file(lines: &[String]) -> String {
    let path = std::env::temp_dir().join(format!("callers-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.to_string_lossy().into_owned()
}

fn system_token_line() -> String {
    format!("sync system {}", hash_token(SYSTEM_TOKEN))
}

/// A server requiring client certificates, with these callers.
async fn mutual_tls_app(callers: &[String]) -> TestApp {
    let file = callers_file(callers);
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    TestApp::start_configured(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--tokens-file",
        &file,
    ])
    .await
}

async fn tls_channel(app: &TestApp, client_certificate: bool) -> Result<Channel, String> {
    let read = |name: &str| std::fs::read(fixture(name)).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    if client_certificate {
        tls = tls.identity(Identity::from_pem(read("client.pem"), read("client.key")));
    }
    Channel::from_shared(format!("https://{}", app.addr))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())
}

async fn tls_health(app: &TestApp, client_certificate: bool) -> Result<(), String> {
    HealthClient::new(tls_channel(app, client_certificate).await?)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn plaintext_health(app: &TestApp) -> bool {
    let endpoint = Channel::from_shared(format!("http://{}", app.addr)).unwrap();
    match endpoint.connect().await {
        Ok(channel) => HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok(),
        Err(_) => false,
    }
}

fn upsert_admin() -> tonic::Request<pb::UpsertUserRequest> {
    system(
        CAMPAIGN,
        pb::UpsertUserRequest {
            user_id: "admin".into(),
            role: pb::Role::Admin.into(),
            display_name: String::new(),
        },
    )
}

fn with_token<T>(mut request: tonic::Request<T>, token: &str) -> tonic::Request<T> {
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn tls_and_mutual_tls() {
    let (cert, key) = (path("server.pem"), path("server.key"));
    let app = TestApp::start_configured(&["--tls-cert", &cert, "--tls-key", &key]).await;
    tls_health(&app, false)
        .await
        .expect("TLS with the server's CA");
    assert!(!plaintext_health(&app).await, "no cleartext on a TLS port");

    let app = mutual_tls_app(&[format!(
        "ingest system cert-sha256:{}",
        client_fingerprint()
    )])
    .await;
    assert!(
        tls_health(&app, false).await.is_err(),
        "mutual TLS needs a client certificate"
    );
    tls_health(&app, true)
        .await
        .expect("a client certificate signed by the CA");

    // The health-check subcommand (container probes) speaks TLS and mutual TLS too.
    use assignment_service::probe::{ProbeTls, health_check};
    let endpoint = format!("https://localhost:{}", app.addr.port());
    let (ca, cert, key) = (
        fixture("ca.pem"),
        fixture("client.pem"),
        fixture("client.key"),
    );
    let probe = ProbeTls {
        ca_cert: Some(&ca),
        client_cert: Some(&cert),
        client_key: Some(&key),
    };
    assert_eq!(health_check(&endpoint, "", probe).await, Ok(true));
    let without_identity = ProbeTls {
        ca_cert: Some(&ca),
        ..ProbeTls::default()
    };
    assert!(health_check(&endpoint, "", without_identity).await.is_err());
}

#[tokio::test]
async fn a_user_scoped_certificate_may_not_call_system_rpcs() {
    let app = mutual_tls_app(&[
        format!("web user cert-sha256:{}", client_fingerprint()),
        system_token_line(),
    ])
    .await;
    let channel = tls_channel(&app, true).await.unwrap();
    let status = expect_code(
        DirectoryServiceClient::new(channel.clone())
            .upsert_user(upsert_admin())
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "SYSTEM_SCOPE_REQUIRED");
    assert!(status.message().contains("\"web\""), "{status:?}");
    assert_eq!(
        app.count("users").await,
        0,
        "refused calls reach no handler"
    );

    // A bearer token, when sent, is what identifies the caller.
    DirectoryServiceClient::new(channel.clone())
        .upsert_user(with_token(upsert_admin(), SYSTEM_TOKEN))
        .await
        .expect("a system token over the same connection");
    // The certificate alone acts for the user in x-actor-id.
    let settings = AssignmentServiceClient::new(channel)
        .get_inbox_settings(as_actor("admin", pb::GetInboxSettingsRequest {}))
        .await
        .expect("a user-scoped certificate calls user RPCs");
    assert!(settings.into_inner().settings.is_some());
}

#[tokio::test]
async fn a_system_scoped_certificate_may_sync_the_directory() {
    let app = mutual_tls_app(&[format!("sync system cert-sha256:{}", client_fingerprint())]).await;
    let channel = tls_channel(&app, true).await.unwrap();
    DirectoryServiceClient::new(channel)
        .upsert_user(upsert_admin())
        .await
        .expect("a pinned system certificate");
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn a_certificate_the_tokens_file_does_not_name_is_unauthenticated() {
    let elsewhere = hash_token("some other certificate");
    let app = mutual_tls_app(&[
        format!("other user cert-sha256:{elsewhere}"),
        system_token_line(),
    ])
    .await;
    let channel = tls_channel(&app, true).await.unwrap();
    let status = expect_code(
        AssignmentServiceClient::new(channel.clone())
            .get_inbox_settings(as_actor("admin", pb::GetInboxSettingsRequest {}))
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&status), "CERTIFICATE_UNKNOWN");
    assert!(
        status.message().contains(&client_fingerprint()),
        "names the fingerprint to pin: {status:?}"
    );
    DirectoryServiceClient::new(channel)
        .upsert_user(with_token(upsert_admin(), SYSTEM_TOKEN))
        .await
        .expect("with a valid token the call goes through");
}

#[tokio::test]
async fn unsafe_caller_configurations_refuse_to_start() {
    let url = fresh_schema_url().await;
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    // Mutual TLS with no tokens file would let every certificate holder call everything.
    let err = app::build(&config(
        &url,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    ))
    .await
    .err()
    .expect("mutual TLS without callers is refused");
    assert!(err.contains("cert-sha256"), "{err}");

    // One secret with two names (or scopes): which would it be?
    let twice = callers_file(&[
        format!("a user {}", hash_token("shared")),
        format!("b system {}", hash_token("shared")),
    ]);
    let err = app::build(&config(&url, &["--tokens-file", &twice]))
        .await
        .err()
        .expect("a secret listed twice is refused");
    assert!(err.contains("same token"), "{err}");
}

#[tokio::test]
async fn tls_connections_without_a_handshake_or_a_preface_are_closed_after_the_handshake_timeout() {
    use std::sync::Arc;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

    let (cert, key) = (path("server.pem"), path("server.key"));
    let app = TestApp::start_configured(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--handshake-timeout",
        "300ms",
    ])
    .await;
    let silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();

    // A client that completes the TLS handshake, then says nothing.
    let mut roots = RootCertStore::empty();
    let ca = std::fs::read(fixture("ca.pem")).unwrap();
    for certificate in tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let handshaken = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the TLS handshake");

    use crate::connections::closed_within;
    let within = std::time::Duration::from_secs(10);
    assert!(
        closed_within(silent, within).await,
        "a connection with no TLS handshake is closed"
    );
    assert!(
        closed_within(handshaken, within).await,
        "a TLS connection that sends no HTTP/2 preface is closed"
    );
    tls_health(&app, false)
        .await
        .expect("TLS clients are served as before");
}

#[tokio::test]
async fn a_tls_key_that_does_not_match_its_certificate_is_refused_naming_both_files() {
    let url = fresh_schema_url().await;
    let (cert, key) = (path("server.pem"), path("client.key"));
    let err = app::build(&config(&url, &["--tls-cert", &cert, "--tls-key", &key]))
        .await
        .err()
        .expect("a key of another certificate is refused");
    assert!(err.contains("does not match"), "{err}");
    assert!(
        err.contains(&cert) && err.contains(&key),
        "names both files: {err}"
    );
}
