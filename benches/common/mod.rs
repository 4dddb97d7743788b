//! Shared by the benchmarks: a PostgreSQL to run against, and campaigns seeded through the real API.

#![allow(dead_code)]

use std::path::Path;

use assignment_service::embedded_pg::EmbeddedPostgres;
use assignment_service::pb;
use assignment_service::pb::access_group_service_client::AccessGroupServiceClient;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::pb::directory_service_client::DirectoryServiceClient;
use assignment_service::store::Store;
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
        let admin = Store::connect(server_url, 1, std::time::Duration::from_secs(60))
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

    pub async fn drop_schema(self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(self.admin.pool())
            .await
            .unwrap();
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

/// The `p`-quantile (0..=1) of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}
