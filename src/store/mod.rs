//! PostgreSQL access: the pool, transactions, and the queries. No business rules live here.
//!
//! Every query is a free function that takes a connection (`&mut PgConnection`: a transaction or a pooled
//! connection) and plain data, and returns domain values. The store never calls back into the layers above:
//! the use cases in `service` open the transaction, call the queries and the rules in order, and commit.

pub mod access_groups;
pub mod auto_assign;
pub mod bulk;
pub mod conversations;
pub mod feed;
pub mod history;
pub mod holders;
pub mod inbox_settings;
mod liveness;
pub mod notices;
pub mod preview;
pub mod relay;
pub mod replies;
pub(crate) mod rules;
pub mod secrets;
pub mod shifts;
mod transaction;
pub mod users;
pub mod waiting;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres};

use crate::domain::opaque::Secret;
use crate::error::{AppError, AppResult};
use liveness::Liveness;
pub use transaction::Tx;
// The access rules' fragments, where the queries (and the auto-assign batch) have always found them.
pub(crate) use rules::{grant_exists, scope_covers};

/// A connection to run queries on: a transaction (`&mut *tx`) or a pooled connection.
pub type Conn = sqlx::PgConnection;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// SQLSTATE codes the service reacts to.
pub mod sqlstate {
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// A statement ran past `statement_timeout`.
    pub const QUERY_CANCELED: &str = "57014";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
}

/// What kind of trouble a database error is, for the caller's retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFault {
    /// The database cannot be reached or is shutting down: retry with backoff.
    Unavailable,
    /// A statement ran too long: retry with backoff.
    TimedOut,
    /// A serialization failure or deadlock: the whole call can be retried.
    Conflict,
    /// Anything else: a bug or a broken invariant.
    Internal,
}

/// Classifies a database error.
pub fn fault(err: &sqlx::Error) -> DatabaseFault {
    use sqlstate::*;
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => DatabaseFault::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED) => DatabaseFault::Conflict,
            Some(QUERY_CANCELED) => DatabaseFault::TimedOut,
            Some(ADMIN_SHUTDOWN | CANNOT_CONNECT_NOW) => DatabaseFault::Unavailable,
            _ => DatabaseFault::Internal,
        },
        _ => DatabaseFault::Internal,
    }
}

/// Whether `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some(sqlstate::UNIQUE_VIOLATION))
}

/// How long a new connection may take: longer, and the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The database could not be reached at start-up: where it was looked for (never the password), and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the database at {address}: {reason}")]
pub struct ConnectError {
    pub address: String,
    pub reason: String,
}

/// The service's handle on its database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// The secret of opaque ids (`domain::opaque`), read once on first use: it never changes.
    opaque_secret: Arc<tokio::sync::OnceCell<Secret>>,
    /// The schema the tables are in (the connections' `current_schema()`), read once on first use.
    schema: Arc<tokio::sync::OnceCell<String>>,
    liveness: Arc<Liveness>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("address", &self.liveness.address)
            .field("pool", &self.pool)
            .finish()
    }
}

/// How a keyed transaction begins (see [`Store::begin_keyed`]); a macro, so `concat!` can extend it.
macro_rules! begin_keyed_sql {
    () => {
        "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; \
         SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off; \
         SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off"
    };
}
const BEGIN_KEYED: &str = begin_keyed_sql!();
const BEGIN_KEYED_UNFLUSHED: &str =
    concat!(begin_keyed_sql!(), "; SET LOCAL synchronous_commit = off");

impl Store {
    /// Opens the health check's own connection, then the pool; a database that cannot be reached fails
    /// here, naming its address and the error. Every statement is cut off after `statement_timeout`, and a
    /// transaction left idle is ended, so nothing stuck can hold a row lock (such as a campaign's
    /// auto-assign lock) for long.
    pub async fn connect(
        database_url: &str,
        max_connections: u32,
        statement_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let millis = statement_timeout.as_millis().max(1).to_string();
        let options = PgConnectOptions::from_str(database_url)
            .map_err(|err| ConnectError {
                address: "(unparsable DATABASE_URL)".into(),
                reason: err.to_string(),
            })?
            .options([
                ("statement_timeout", millis.as_str()),
                ("idle_in_transaction_session_timeout", millis.as_str()),
            ]);
        let address = liveness::address(&options);
        let failed = |reason: String| ConnectError {
            address: address.clone(),
            reason,
        };
        let health = liveness::connect(&options, CONNECT_TIMEOUT)
            .await
            .map_err(&failed)?;
        let liveness = Arc::new(Liveness::new(
            address.clone(),
            options.clone(),
            CONNECT_TIMEOUT,
            health,
        ));
        let fresh = liveness.clone();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(CONNECT_TIMEOUT)
            // No ping before every checkout: that is a round trip per transaction. A connection that died
            // fails its first statement instead (UNAVAILABLE, retriable) and is dropped from the pool; and
            // those made before an outage the health check saw are dropped unused.
            .test_before_acquire(false)
            .before_acquire(move |_, meta| {
                let fresh = fresh.made_since_outage(meta.age);
                Box::pin(async move { Ok(fresh) })
            })
            .connect_with(options)
            .await
            .map_err(|err| failed(err.to_string()))?;
        Ok(Self {
            pool,
            liveness,
            opaque_secret: Arc::default(),
            schema: Arc::default(),
        })
    }

    /// Where the database is (`host:port` or its socket, database and user; never the password).
    pub fn address(&self) -> &str {
        &self.liveness.address
    }

    /// Checks that the database answers, on the health check's own connection (made again when it
    /// breaks), never the pool's. Until a later check answers, calls fail at once with UNAVAILABLE.
    pub async fn check_database(&self, timeout: Duration) -> Result<(), String> {
        self.liveness.check(timeout).await
    }

    /// A LISTEN connection of its own, not one of the pool's (calls need those).
    pub async fn listener(&self) -> Result<PgListener, sqlx::Error> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        PgListener::connect_with(&own).await
    }

    /// Whether the database answered the last check.
    pub fn database_up(&self) -> bool {
        self.liveness.is_up()
    }

    /// Refuses at once while the last check found the database unreachable: waiting for the pool would
    /// only spend the caller's deadline.
    fn reachable(&self) -> AppResult<()> {
        if self.liveness.is_up() {
            Ok(())
        } else {
            Err(AppError::database_unreachable(&self.liveness.address))
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The secret every replica keys its opaque ids with (`domain::opaque`): read from the database on
    /// first use, then kept.
    pub async fn opaque_secret(&self) -> AppResult<&Secret> {
        self.opaque_secret
            .get_or_try_init(|| async {
                let mut conn = self.acquire().await?;
                secrets::opaque_ids(&mut conn).await
            })
            .await
    }

    /// The schema the service's tables are in (the feed's notifications name it: several services may
    /// share a database, each in its own schema).
    pub async fn schema(&self) -> AppResult<&str> {
        let schema = self
            .schema
            .get_or_try_init(|| async {
                let mut conn = self.acquire().await?;
                let schema: String = sqlx::query_scalar("SELECT current_schema()")
                    .fetch_one(&mut *conn)
                    .await?;
                AppResult::Ok(schema)
            })
            .await?;
        Ok(schema.as_str())
    }

    /// Begins a transaction. It is cancellation-safe: see [`Tx`].
    pub async fn begin(&self) -> AppResult<Tx> {
        self.reachable()?;
        Ok(Tx::begin(self.pool.acquire().await?, "BEGIN").await?)
    }

    /// A pooled connection, for reads that need no transaction.
    pub async fn acquire(&self) -> AppResult<PoolConnection<Postgres>> {
        self.reachable()?;
        Ok(self.pool.acquire().await?)
    }

    /// Begins a transaction of statements that reach every row by its key: an auto-assign batch's, a bulk
    /// batch's, or the feed sequencer's. They run thousands of times a minute: planning them afresh each time would cost
    /// more than running them, so their plans are made once per connection and kept (`force_generic_plan`).
    /// A kept plan must not scan what grows: these statements reach each row by its key, one lookup per
    /// item, and with sequential and bitmap scans, avoidable sorts, hash and merge joins off, the planner is
    /// left with those lookups (and row-id joins stay TID scans). A plan made while a table was nearly empty
    /// is kept however the table grows (until an analyze, which may never come), so the lookups leave it no
    /// choice: each item is LATERAL to its lookup (a join lets it scan the campaign and filter by id) and a
    /// conversation is reached through its primary key ([`by_key`]; another index leading with the campaign
    /// ties with it on an empty table). JIT is off: the disabled paths' costs would pass its
    /// threshold, and compiling costs far more than these statements. The settings ride on the BEGIN round
    /// trip and end with the transaction.
    pub async fn begin_keyed(&self) -> AppResult<Tx> {
        self.reachable()?;
        Ok(Tx::begin(self.pool.acquire().await?, BEGIN_KEYED).await?)
    }

    /// A keyed transaction ([`Store::begin_keyed`]) whose commit does not wait for its WAL to reach disk: for
    /// bookkeeping a crash may lose because it is recovered from elsewhere (the relay's positions, which
    /// JetStream's expected sequence corrects). It spares the service's own commits a flush to queue behind.
    pub async fn begin_keyed_unflushed(&self) -> AppResult<Tx> {
        self.reachable()?;
        Ok(Tx::begin(self.pool.acquire().await?, BEGIN_KEYED_UNFLUSHED).await?)
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
}

/// The condition that reaches a row of `alias` found earlier in the statement (by its key, under its lock),
/// by its row id `row_id`, with its campaign `campaign` beside it. A row id means something only within
/// one table, and on a PostgreSQL distributed by campaign within one shard: the campaign says which, and
/// Citus prunes shards on an equality of the distribution column whatever its collation. Compared under
/// the "C" collation (for text, the same equality), it is no index bound for PostgreSQL, whose indexes
/// here are built with the default one ("Indexes and Collations" in its documentation): a kept plan cannot
/// take it to read the campaign's rows for each row it changes, and reaches each by its id (a TID scan).
pub(crate) fn by_row_id(alias: &str, campaign: &str, row_id: &str) -> String {
    format!("{alias}.ctid = {row_id} AND {alias}.campaign_id = {campaign} COLLATE \"C\"")
}

/// The campaigns a read of timed work covers: those named (by their keys), or every one (an agenda's full
/// read, across campaigns).
#[derive(Debug, Clone, Copy)]
pub enum Campaigns<'a> {
    Named(&'a [String]),
    Every,
}

impl Campaigns<'_> {
    /// The SQL condition on the campaign id `column` that keeps them (`$param`: the names).
    fn condition(&self, column: &str, param: usize) -> String {
        match self {
            Campaigns::Named(_) => format!("{column} = ANY(${param})"),
            Campaigns::Every => "true".to_owned(),
        }
    }
}

/// Runs `sql`, a read of each campaign's next due time (campaign id, time) for `campaigns`, binding their
/// names if it has them.
async fn next_due_of(
    conn: &mut Conn,
    sql: &str,
    campaigns: Campaigns<'_>,
) -> AppResult<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
    let query = sqlx::query_as(sql);
    let query = match campaigns {
        Campaigns::Named(ids) => query.bind(ids),
        Campaigns::Every => query,
    };
    Ok(query.fetch_all(conn).await?)
}

/// A LATERAL lookup, named `name`, of the one row of `table` (aliased `alias`) of campaign `campaign` with
/// conversation id `id`, by its key ([`by_key`]): its row id as `row_id`, then `columns` (a list after a
/// comma; empty: none). How a statement finds each row it changes, one lookup per row whatever the
/// statistics, before changing it by that id ([`by_row_id`]).
pub(crate) fn row_by_key(
    table: &str,
    alias: &str,
    campaign: &str,
    id: &str,
    columns: &str,
    name: &str,
) -> String {
    format!(
        "CROSS JOIN LATERAL (SELECT {alias}.ctid AS row_id{columns} FROM {table} {alias} \
          WHERE {alias}.campaign_id = {campaign} AND {} LIMIT 1) AS {name}",
        by_key(alias, id)
    )
}

/// The condition and order that reach the one row of `alias` (`conversations` or `waiting_conversations`,
/// whose campaign is matched beside it) with conversation id `id` through its primary key, whatever the
/// statistics when a kept plan is made. With `conversation_id = id`, a plan made on a nearly empty table
/// may as well take `conversations_by_assignee` (campaign, assignee, conversation), which reads every entry
/// of the campaign per lookup; the range (the same single value) and its order need no sort only on the
/// primary key, and sorts are off in `begin_keyed` transactions.
fn by_key(alias: &str, id: &str) -> String {
    format!(
        "{alias}.conversation_id >= {id} AND {alias}.conversation_id <= {id} \
         ORDER BY {alias}.conversation_id"
    )
}
