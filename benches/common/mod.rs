//! Shared by the benchmarks: a PostgreSQL to run against, and campaigns seeded through the real API.

#![allow(dead_code)]

pub mod cpu;

use std::path::Path;
use std::time::Duration;

use assignment_service::app;
use assignment_service::config::Config;
use assignment_service::embedded_pg::EmbeddedPostgres;
use assignment_service::pb;
use assignment_service::pb::access_group_service_client::AccessGroupServiceClient;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::pb::directory_service_client::DirectoryServiceClient;
use assignment_service::store::Store;
use clap::Parser;
use tonic::Request;
use tonic::transport::Channel;

/// DATABASE_URL, or a private durable cluster under target/ (kept in the returned handle).
pub fn database() -> (String, Option<EmbeddedPostgres>) {
    match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-postgres");
            let cluster = EmbeddedPostgres::start(&dir, &[("max_connections", "300")])
                .expect("embedded PostgreSQL");
            cpu::watch_postgres(cluster.data_dir());
            (cluster.url("postgres"), Some(cluster))
        }
    }
}

/// A new schema on the server at `server_url`, for one benchmark run. Dropped by [`BenchSchema::drop_schema`].
pub struct BenchSchema {
    admin: Store,
    pub name: String,
    /// `server_url` narrowed to the schema.
    pub url: String,
}

impl BenchSchema {
    pub async fn create(server_url: &str, prefix: &str) -> Self {
        let name = format!("{prefix}_{}", std::process::id());
        let admin = Store::connect(server_url, 1, Duration::from_secs(60))
            .await
            .expect("connect");
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(admin.pool())
            .await
            .unwrap();
        let separator = if server_url.contains('?') { '&' } else { '?' };
        let url = format!("{server_url}{separator}options[search_path]={name}");
        Self { admin, name, url }
    }

    /// Drops the schema. The bench's servers still run their sweeps against it, so a deadlock with one of
    /// them is retried.
    pub async fn drop_schema(self) {
        for attempt in 1.. {
            let dropped = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
                .execute(self.admin.pool())
                .await;
            match dropped {
                Ok(_) => return,
                Err(err) if attempt < 5 => {
                    eprintln!("dropping schema {}: {err}; retrying", self.name);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("dropping schema {}: {err}", self.name),
            }
        }
    }
}

pub fn with_campaign<T>(campaign: &str, actor: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-campaign-id", campaign.parse().unwrap());
    if let Some(actor) = actor {
        request
            .metadata_mut()
            .insert("x-actor-id", actor.parse().unwrap());
    }
    request
}

pub fn organizer_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("org-{i:02}")).collect()
}

/// A campaign with admin "admin", `organizers` organizers who may reply to everything, and auto-assignment on.
pub async fn seed_campaign(channel: &Channel, campaign: &str, organizers: usize) {
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let users = std::iter::once(("admin".to_string(), pb::Role::Admin)).chain(
        organizer_ids(organizers)
            .into_iter()
            .map(|id| (id, pb::Role::Organizer)),
    );
    for (user_id, role) in users {
        let request = pb::UpsertUserRequest {
            user_id,
            role: role.into(),
            display_name: String::new(),
        };
        directory
            .upsert_user(with_campaign(campaign, None, request))
            .await
            .unwrap();
    }
    AccessGroupServiceClient::new(channel.clone())
        .create_access_group(with_campaign(
            campaign,
            Some("admin"),
            pb::CreateAccessGroupRequest {
                name: "Inbox team".into(),
                permissions: Some(pb::AccessGroupPermissions {
                    view: true,
                    reply: true,
                }),
                scope: Some(pb::AccessGroupScope {
                    all_conversations: true,
                    ..Default::default()
                }),
                organizer_ids: organizer_ids(organizers),
            },
        ))
        .await
        .unwrap();
    AssignmentServiceClient::new(channel.clone())
        .update_inbox_settings(with_campaign(
            campaign,
            Some("admin"),
            pb::UpdateInboxSettingsRequest {
                auto_assign_enabled: Some(true),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

/// A server in this process, built as `main.rs` builds it, with `flags` added to the defaults; returns its
/// address.
pub async fn start_server(url: &str, flags: &[&str]) -> String {
    let mut args = vec![
        "assignment-service",
        "--listen-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--database-url",
        url,
    ];
    args.extend(flags);
    let config = Config::try_parse_from(args).expect("bench flags");
    let server = app::build(&config).await.expect("build the server");
    let addr = server.local_addr().to_string();
    tokio::spawn(server.serve(std::future::pending()));
    addr
}

pub async fn connect(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Changes the campaign's inbox settings as admin "admin" (fields left unset keep their value).
pub async fn update_settings(
    channel: &Channel,
    campaign: &str,
    settings: pb::UpdateInboxSettingsRequest,
) {
    AssignmentServiceClient::new(channel.clone())
        .update_inbox_settings(with_campaign(campaign, Some("admin"), settings))
        .await
        .unwrap();
}

/// Sets a user's availability as a system caller (the presence tracker: no x-actor-id).
pub async fn set_availability(
    channel: &Channel,
    campaign: &str,
    user_id: &str,
    availability: pb::Availability,
) {
    let reply = AssignmentServiceClient::new(channel.clone())
        .set_availability(with_campaign(
            campaign,
            None,
            pb::SetAvailabilityRequest {
                user_id: user_id.to_owned(),
                availability: availability.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.changed, "{user_id} was already {availability:?}");
}

/// A quiet database for the next measured run: no checkpoint or autovacuum left over from the run before.
pub async fn settle(store: &Store) {
    let _ = sqlx::query("CHECKPOINT").execute(store.pool()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The smallest and largest number of conversations assigned to one user in the campaign (users with none
/// are not counted).
pub async fn assignment_spread(store: &Store, campaign: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(min(n), 0), coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM conversations \
         WHERE campaign_id = $1 AND assignee_id IS NOT NULL GROUP BY assignee_id) counts",
    )
    .bind(campaign)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// The environment variable `name` parsed, or `default` when it is unset; a value that does not parse stops
/// the bench naming it.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{name}: not a valid value: {s:?}")),
        Err(_) => default,
    }
}

/// The `p`-quantile (0..=1) of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}
