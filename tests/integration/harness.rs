//! Starts the real server in-process on an ephemeral port, backed by a fresh schema of a real PostgreSQL:
//! `DATABASE_URL` when set, otherwise a private cluster started once for this test process.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use assignment_service::app;
use assignment_service::config::Config;
use assignment_service::embedded_pg::{EmbeddedPostgres, THROWAWAY_SETTINGS};
use assignment_service::pb;
use assignment_service::pb::access_group_service_client::AccessGroupServiceClient;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::pb::directory_service_client::DirectoryServiceClient;
use assignment_service::store::Store;
use clap::Parser;
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The server URL every test schema lives in.
fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    // Never dropped: the cluster stops when this test process exits.
    static CLUSTER: OnceLock<EmbeddedPostgres> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        remove_stale_clusters();
        let dir = cluster_dir(std::process::id());
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = EmbeddedPostgres::start(&dir, THROWAWAY_SETTINGS)
            .unwrap_or_else(|err| panic!("no DATABASE_URL and no embedded PostgreSQL: {err}"));
        CLUSTER.get_or_init(|| cluster).url("postgres")
    })
}

fn cluster_dir(pid: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("assignment-service-test-pg-{pid}"))
}

/// Clusters of test processes that no longer run.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("assignment-service-test-pg-"))
            .and_then(|p| p.strip_suffix(".log").or(Some(p)))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

/// A URL whose connections see only a new, empty schema.
pub async fn fresh_schema_url() -> String {
    let base = server_url();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The creation time in the name lets a later run drop what an earlier one left in a shared database.
    let schema = format!("t_{now}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to test PostgreSQL");
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        drop_old_schemas(&mut conn, now).await;
    }
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options[search_path]={schema}")
}

/// Test schemas more than an hour old: runs against a shared `DATABASE_URL` leave theirs behind.
async fn drop_old_schemas(conn: &mut sqlx::PgConnection, now: u64) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname FROM pg_namespace WHERE nspname ~ '^t_[0-9]+_[0-9a-f]+$'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for name in names {
        let created: u64 = name
            .split('_')
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(created) > 3600 {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// One running server with its own schema, started as `main.rs` starts it: [`app::build`] from a
/// [`Config`] parsed from flags, then [`app::App::serve`].
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where this server serves `/metrics`.
    pub metrics_addr: SocketAddr,
    pub store: Store,
    /// The schema's URL, for replicas of this server.
    pub database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

pub const CAMPAIGN: &str = "camp-1";

/// Flags for a server whose database is compared before and after each call: the periodic sweep (which
/// folds organizers' load changes into their counts) must not write in between.
pub const NO_SWEEP: [&str; 2] = ["--waiting-sweep-interval", "24h"];

/// The configuration a test server runs with: ephemeral ports, `database_url`, a pool of 8 unless `flags`
/// say otherwise, and `flags` on top.
pub fn config(database_url: &str, flags: &[&str]) -> Config {
    let mut args = vec![
        "assignment-service",
        "--listen-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ];
    if !flags.contains(&"--pool-size") {
        args.extend_from_slice(&["--pool-size", "8"]);
    }
    args.extend_from_slice(flags);
    Config::try_parse_from(args).expect("valid test flags")
}

impl TestApp {
    /// A transaction outside the service holding `sql`'s row locks (`sql` takes the campaign as `$1`), and
    /// its backend pid.
    pub async fn hold_locks(&self, sql: &str) -> (sqlx::Transaction<'static, sqlx::Postgres>, i32) {
        let mut tx = self.store.pool().begin().await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        sqlx::query(sql)
            .bind(CAMPAIGN)
            .execute(&mut *tx)
            .await
            .unwrap();
        (tx, pid)
    }

    /// Waits until some backend is blocked by `pid`'s locks.
    pub async fn until_blocked_by(&self, pid: i32) {
        for _ in 0..500 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(pid)
            .fetch_one(self.store.pool())
            .await
            .unwrap();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nothing ever waited for the held lock");
    }

    pub async fn start() -> Self {
        Self::start_configured(&[]).await
    }

    /// Another server on the same database, as another replica would be (migrating concurrently is safe).
    pub async fn replica(&self) -> Self {
        Self::start_on(self.database_url.clone()).await
    }

    pub async fn start_on(url: String) -> Self {
        Self::start_with(&config(&url, &[])).await
    }

    /// A server on a fresh schema with these command-line flags.
    pub async fn start_configured(flags: &[&str]) -> Self {
        Self::start_with(&config(&fresh_schema_url().await, flags)).await
    }

    /// A server built from `config` exactly as `main.rs` builds one.
    pub async fn start_with(config: &Config) -> Self {
        let built = app::build(config).await.expect("build the server");
        let (tx, rx) = oneshot::channel();
        let mut app = Self {
            addr: built.local_addr(),
            metrics_addr: built.metrics_addr(),
            store: built.store().clone(),
            database_url: config.database_url.clone().unwrap_or_default(),
            shutdown: Some(tx),
            server: None,
        };
        app.server = Some(tokio::spawn(async move {
            built
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .expect("server");
        }));
        app
    }

    pub async fn channel(&self) -> Channel {
        let endpoint = format!("http://{}", self.addr);
        for _ in 0..50 {
            if let Ok(channel) = Channel::from_shared(endpoint.clone())
                .unwrap()
                .connect()
                .await
            {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server at {} did not accept connections", self.addr);
    }

    pub async fn assignments(&self) -> AssignmentServiceClient<Channel> {
        AssignmentServiceClient::new(self.channel().await)
    }

    pub async fn groups(&self) -> AccessGroupServiceClient<Channel> {
        AccessGroupServiceClient::new(self.channel().await)
    }

    pub async fn directory(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channel().await)
    }

    /// Stops the server gracefully and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    // ----- set-up through the real API -----

    pub async fn user(&self, user_id: &str, role: pb::Role) {
        self.directory()
            .await
            .upsert_user(system(
                CAMPAIGN,
                pb::UpsertUserRequest {
                    user_id: user_id.into(),
                    role: role.into(),
                    display_name: format!("User {user_id}"),
                },
            ))
            .await
            .expect("upsert user");
    }

    /// Changes the campaign's inbox settings as `admin` (fields left unset keep their value).
    pub async fn update_settings(&self, admin: &str, settings: pb::UpdateInboxSettingsRequest) {
        self.assignments()
            .await
            .update_inbox_settings(as_actor(admin, settings))
            .await
            .unwrap();
    }

    /// Switches auto-assignment on, as admin "admin".
    pub async fn enable_auto_assign(&self) {
        self.enable_auto_assign_in(CAMPAIGN).await;
    }

    /// Switches auto-assignment on in `campaign`, as its admin "admin".
    pub async fn enable_auto_assign_in(&self, campaign: &str) {
        let settings = pb::UpdateInboxSettingsRequest {
            auto_assign_enabled: Some(true),
            ..Default::default()
        };
        self.assignments()
            .await
            .update_inbox_settings(as_actor_in(campaign, "admin", settings))
            .await
            .unwrap();
    }

    pub async fn admin(&self, user_id: &str) {
        self.user(user_id, pb::Role::Admin).await;
    }

    pub async fn organizer(&self, user_id: &str) {
        self.user(user_id, pb::Role::Organizer).await;
    }

    pub async fn deactivate(&self, user_id: &str) {
        self.directory()
            .await
            .deactivate_user(system(
                CAMPAIGN,
                pb::DeactivateUserRequest {
                    user_id: user_id.into(),
                },
            ))
            .await
            .expect("deactivate user");
    }

    pub async fn conversation(&self, conversation_id: &str, tags: &[&str]) -> pb::Conversation {
        self.conversation_in(CAMPAIGN, conversation_id, tags).await
    }

    pub async fn conversation_in(
        &self,
        campaign: &str,
        conversation_id: &str,
        tags: &[&str],
    ) -> pb::Conversation {
        self.directory()
            .await
            .upsert_conversation(system(
                campaign,
                pb::UpsertConversationRequest {
                    conversation_id: conversation_id.into(),
                    member_id: format!("member-of-{conversation_id}"),
                    member_tags: tags.iter().map(|t| t.to_string()).collect(),
                },
            ))
            .await
            .expect("upsert conversation")
            .into_inner()
            .conversation
            .unwrap()
    }

    /// An access group created by `admin` with the given organizers, permissions and scope.
    pub async fn group(
        &self,
        admin: &str,
        name: &str,
        organizers: &[&str],
        reply: bool,
        scope: pb::AccessGroupScope,
    ) -> pb::AccessGroup {
        self.groups()
            .await
            .create_access_group(as_actor(
                admin,
                pb::CreateAccessGroupRequest {
                    name: name.into(),
                    permissions: Some(pb::AccessGroupPermissions { view: true, reply }),
                    scope: Some(scope),
                    organizer_ids: organizers.iter().map(|o| o.to_string()).collect(),
                },
            ))
            .await
            .expect("create access group")
            .into_inner()
            .access_group
            .unwrap()
    }

    /// In `campaign`: admin "admin" and `organizers`, who may view and reply to every conversation through
    /// one access group.
    pub async fn team_in(&self, campaign: &str, organizers: &[&str]) {
        let mut directory = self.directory().await;
        let users = std::iter::once(("admin", pb::Role::Admin))
            .chain(organizers.iter().map(|o| (*o, pb::Role::Organizer)));
        for (user_id, role) in users {
            let user = pb::UpsertUserRequest {
                user_id: user_id.into(),
                role: role.into(),
                display_name: String::new(),
            };
            directory
                .upsert_user(system(campaign, user))
                .await
                .expect("upsert user");
        }
        let group = pb::CreateAccessGroupRequest {
            name: "Everyone".into(),
            permissions: Some(pb::AccessGroupPermissions {
                view: true,
                reply: true,
            }),
            scope: Some(scope_all()),
            organizer_ids: organizers.iter().map(|o| o.to_string()).collect(),
        };
        self.groups()
            .await
            .create_access_group(as_actor_in(campaign, "admin", group))
            .await
            .expect("create access group");
    }

    /// The admin "admin" assigns the conversation to `assignee`.
    pub async fn assign_as_admin(&self, conversation: &str, assignee: &str) {
        self.assignments()
            .await
            .assign_conversation(as_actor(
                "admin",
                pb::AssignConversationRequest {
                    conversation_id: conversation.into(),
                    assignee_id: assignee.into(),
                    expected_version: None,
                },
            ))
            .await
            .expect("assign");
    }

    /// The admin "admin" resolves the conversation.
    pub async fn resolve_as_admin(&self, conversation: &str) {
        self.assignments()
            .await
            .resolve_conversation(as_actor(
                "admin",
                pb::ResolveConversationRequest {
                    conversation_id: conversation.into(),
                },
            ))
            .await
            .expect("resolve");
    }

    /// The health service's answer for `service` ("" = the whole server).
    pub async fn health(&self, service: &str) -> Result<ServingStatus, Status> {
        HealthClient::new(self.channel().await)
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|reply| reply.into_inner().status())
    }

    /// A conversation's assignment history, read through the API by admin "admin".
    pub async fn history(&self, conversation: &str) -> Vec<pb::AssignmentEvent> {
        self.assignments()
            .await
            .list_assignment_history(as_actor(
                "admin",
                pb::ListAssignmentHistoryRequest {
                    conversation_id: conversation.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .events
    }

    /// The whole campaign's history in feed order, as admin "admin" reads it, in pages of `page_size`.
    pub async fn campaign_history(&self, page_size: i32) -> Vec<pb::AssignmentEvent> {
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .assignments()
                .await
                .list_assignment_history(as_actor(
                    "admin",
                    pb::ListAssignmentHistoryRequest {
                        page_size,
                        page_token,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return events;
            }
            page_token = page.next_page_token;
        }
    }

    /// The conversation as the database holds it.
    pub async fn stored(&self, conversation_id: &str) -> (Option<String>, String, i64) {
        sqlx::query_as(
            "SELECT assignee_id, status, version FROM conversations WHERE campaign_id = $1 AND conversation_id = $2",
        )
        .bind(CAMPAIGN)
        .bind(conversation_id)
        .fetch_one(self.store.pool())
        .await
        .unwrap()
    }

    /// Sets `user`'s availability as a system caller (the presence tracker).
    pub async fn set_availability(&self, user: &str, availability: pb::Availability) {
        self.assignments()
            .await
            .set_availability(system(
                CAMPAIGN,
                pb::SetAvailabilityRequest {
                    user_id: user.into(),
                    availability: availability.into(),
                },
            ))
            .await
            .unwrap();
    }

    /// The flow builder's trigger for a new conversation of the campaign (trigger and member ids derived
    /// from it), and the service's answer.
    pub async fn auto_assign(&self, conversation: &str) -> pb::AutoAssignConversationResponse {
        self.assignments()
            .await
            .auto_assign_conversation(system(CAMPAIGN, auto_assign_request(conversation)))
            .await
            .unwrap()
            .into_inner()
    }

    /// How many rows `table` holds.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A request acting as `actor` in the default campaign.
/// The flow builder's trigger for a new conversation (trigger and member ids derived from it).
pub fn auto_assign_request(conversation: &str) -> pb::AutoAssignConversationRequest {
    pb::AutoAssignConversationRequest {
        priority: Default::default(),
        conversation_id: conversation.into(),
        trigger_id: format!("t-{conversation}"),
        member_id: format!("m-{conversation}"),
        member_tags: vec![],
    }
}

pub fn as_actor<T>(actor: &str, message: T) -> Request<T> {
    as_actor_in(CAMPAIGN, actor, message)
}

pub fn as_actor_in<T>(campaign: &str, actor: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-campaign-id", campaign.parse().unwrap());
    request
        .metadata_mut()
        .insert("x-actor-id", actor.parse().unwrap());
    request
}

/// A request from a system of record (campaign only).
pub fn system<T>(campaign: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-campaign-id", campaign.parse().unwrap());
    request
}

/// Asserts the call failed with `code` and returns the status for further checks.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            assert!(!status.message().is_empty(), "errors carry a message");
            status
        }
    }
}

/// The google.rpc.ErrorInfo reason of a status.
pub fn reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

pub fn scope_all() -> pb::AccessGroupScope {
    pb::AccessGroupScope {
        all_conversations: true,
        ..Default::default()
    }
}

pub fn scope_tags(tags: &[&str]) -> pb::AccessGroupScope {
    pb::AccessGroupScope {
        member_tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

pub fn scope_conversations(ids: &[&str]) -> pb::AccessGroupScope {
    pb::AccessGroupScope {
        conversation_ids: ids.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

/// Asserts that the answer about `hidden_id` (a conversation the caller may not view) is exactly the
/// answer about `missing_id` (one that does not exist): same code, reason, message and details, once the
/// ids are swapped.
#[track_caller]
pub fn assert_same_as_missing(
    hidden: &Status,
    hidden_id: &str,
    missing: &Status,
    missing_id: &str,
) {
    use tonic_types::StatusExt;
    assert_eq!(hidden.code(), missing.code(), "{hidden:?} vs {missing:?}");
    assert_eq!(
        hidden.message().replace(hidden_id, missing_id),
        missing.message(),
        "the messages differ beyond the id"
    );
    let info = |status: &Status| {
        status.get_error_details().error_info().map(|info| {
            let mut metadata: Vec<(String, String)> = info
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.replace(hidden_id, missing_id)))
                .collect();
            metadata.sort();
            (info.reason.clone(), info.domain.clone(), metadata)
        })
    };
    assert_eq!(info(hidden), info(missing), "the error details differ");
}

/// A free port on loopback, for a server in another process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real server binary on a fresh schema, listening on `addr`, with JSON logs at info on a piped stderr,
/// `args` added and `envs` set; returns it once it accepts connections, with a channel to it.
pub async fn spawn_binary(
    addr: &str,
    args: &[&str],
    envs: &[(&str, String)],
) -> (std::process::Child, Channel) {
    spawn_binary_on(&fresh_schema_url().await, addr, args, envs).await
}

/// [`spawn_binary`] on the database at `database_url`.
pub async fn spawn_binary_on(
    database_url: &str,
    addr: &str,
    args: &[&str],
    envs: &[(&str, String)],
) -> (std::process::Child, Channel) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_assignment-service"));
    child
        .args(["--database-url", database_url])
        .args(["--listen-addr", addr, "--metrics-addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped());
    for (name, value) in envs {
        child.env(name, value);
    }
    let mut child = child.spawn().expect("start the server binary");
    let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..250 {
        if let Ok(connected) = endpoint.connect().await {
            return (child, connected);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server binary never accepted connections");
}

/// Bulk-assigns `ids` round robin to o1 and o2; every one is assigned.
pub async fn bulk_assign_round_robin(app: &TestApp, ids: &[String]) {
    use pb::bulk_assign_request::Payload;
    let messages = [
        Payload::Options(pb::BulkAssignOptions {
            assignee_ids: vec!["o1".into(), "o2".into()],
            ..Default::default()
        }),
        Payload::Conversations(pb::ConversationBatch {
            conversation_ids: ids.to_vec(),
        }),
    ]
    .map(|payload| pb::BulkAssignRequest {
        payload: Some(payload),
    });
    let mut stream = app
        .assignments()
        .await
        .bulk_assign(as_actor("admin", tokio_stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    let mut assigned = 0;
    while let Some(message) = tokio_stream::StreamExt::next(&mut stream).await {
        if let Some(pb::bulk_assign_response::Payload::Summary(summary)) = message.unwrap().payload
        {
            assigned = summary.assigned;
        }
    }
    assert_eq!(assigned as usize, ids.len());
}

/// Pages of the schema's tables and indexes read so far (from the cache or the disk), as the store's backend
/// reports them once it flushed its counters (a store of one connection: the backend that ran what is
/// measured). A scan of a campaign's rows reads hundreds of pages; a lookup by key a few.
pub async fn pages_touched(store: &Store) -> i64 {
    // The backend flushes its counters when it goes idle after this statement, before answering it.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT COALESCE(sum(COALESCE(heap_blks_read, 0) + COALESCE(heap_blks_hit, 0) \
                             + COALESCE(idx_blks_read, 0) + COALESCE(idx_blks_hit, 0)), 0)::bigint \
           FROM pg_statio_user_tables WHERE schemaname = current_schema()",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}
