//! PostgreSQL access: queries, transactions and row locks. No business rules live here.

mod access_groups;
mod auto_assign;
mod bulk;
mod conversations;
mod history;
mod users;

pub use access_groups::{AccessGroupRow, CoverageRow, GrantRow, GroupChanges, NewGroup};
pub use auto_assign::{InboxSettingsRow, TriggerInput, TriggerReply};
pub use bulk::GrantGroup;
pub use conversations::{
    ConversationFilter, ConversationRow, LockedConversation, ViewedConversation, Write,
};
pub use history::EventRow;
pub use users::UserRow;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::error::AppResult;

pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Who makes a change, where, and in which call: every write records it on its history events.
#[derive(Debug, Clone, Copy)]
pub struct ChangeContext<'a> {
    pub campaign_id: &'a str,
    pub actor_id: &'a str,
    pub request_id: Option<&'a str>,
}

/// The service's handle on its database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects with the default statement timeout; see [`Store::connect_with`].
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        Self::connect_with(database_url, max_connections, DEFAULT_STATEMENT_TIMEOUT).await
    }

    /// Opens the pool; the first connection is made here so a bad URL fails at start-up. Every statement is
    /// cut off after `statement_timeout`, and a transaction left idle is ended, so nothing stuck can hold a
    /// row lock (such as a campaign's rotation lock) for long.
    pub async fn connect_with(
        database_url: &str,
        max_connections: u32,
        statement_timeout: Duration,
    ) -> Result<Self, sqlx::Error> {
        let millis = statement_timeout.as_millis().max(1).to_string();
        let options = PgConnectOptions::from_str(database_url)?.options([
            ("statement_timeout", millis.as_str()),
            ("idle_in_transaction_session_timeout", millis.as_str()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // No ping before every checkout: that is a round trip per transaction. A connection that died
            // fails its first statement instead (UNAVAILABLE, retriable) and is dropped from the pool.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations. sqlx holds a Postgres advisory lock meanwhile, so replicas starting
    /// together apply each migration exactly once.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        // Waiting for another replica's migration, or for a table lock, may take longer than any statement
        // of the service should: this connection has no timeouts, and leaves the pool when done.
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query("SET statement_timeout = 0")
            .execute(&mut conn)
            .await?;
        sqlx::query("SET idle_in_transaction_session_timeout = 0")
            .execute(&mut conn)
            .await?;
        let result = MIGRATOR.run(&mut conn).await;
        let _ = conn.close().await;
        result
    }

    /// Begins a transaction whose statements are planned for the tables as they are now. Auto-assignment runs
    /// the same few statements thousands of times a minute while `auto_assign_triggers` grows from nothing:
    /// a generic plan cached while it was nearly empty (a sequential scan) would be kept as it grew, and every
    /// batch would slow down with it. Planning afresh costs less than that. The setting rides on the BEGIN
    /// round trip and ends with the transaction. (Bulk batches keep cached plans: their index plans hold at
    /// every size, and a fresh plan for a 500-row batch can pick a scan.)
    pub(crate) async fn begin_replanned(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool
            .begin_with("BEGIN; SET LOCAL plan_cache_mode = force_custom_plan")
            .await
    }

    /// A round trip to the database, for health reporting.
    pub async fn ping(&self) -> AppResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// `EXISTS (…)`: an access group that grants `permission` (`can_view` or `can_reply`) on the conversation
/// aliased `c` has the user bound at `user_param` as a member.
fn grant_exists(user_param: &str, permission: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM access_group_organizers m \
           JOIN access_groups g ON g.campaign_id = m.campaign_id AND g.access_group_id = m.access_group_id \
          WHERE m.campaign_id = c.campaign_id AND m.user_id = {user_param} AND g.{permission} AND {})",
        scope_covers("g", "c")
    )
}

/// Whether the scope of access group `group` covers conversation `conv`: all conversations, a shared member
/// tag, or an explicit listing.
fn scope_covers(group: &str, conv: &str) -> String {
    format!(
        "({group}.scope_all OR {group}.scope_tags && {conv}.member_tags \
          OR EXISTS (SELECT 1 FROM access_group_conversations x \
                      WHERE x.campaign_id = {group}.campaign_id AND x.access_group_id = {group}.access_group_id \
                        AND x.conversation_id = {conv}.conversation_id))"
    )
}
