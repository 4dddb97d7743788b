//! Whether the database answers, as the health check last saw it on a connection of its own (never the
//! pool's: a pool busy with calls or watchers is not an outage). While it does not answer, calls fail at
//! once instead of waiting for the pool; once it answers again, pooled connections made before the outage
//! are dropped rather than handed to a call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

/// Where a database is, for messages and logs: `host:port` or the Unix socket, its database and user.
/// Never the password.
pub fn address(options: &PgConnectOptions) -> String {
    let place = match options.get_socket() {
        Some(dir) => format!(
            "Unix socket {}",
            dir.join(format!(".s.PGSQL.{}", options.get_port()))
                .display()
        ),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    format!(
        "{place} (database {}, user {})",
        options.get_database().unwrap_or(options.get_username()),
        options.get_username()
    )
}

/// Opens one connection, giving up after `timeout` (an unreachable host may not refuse for minutes).
pub(super) async fn connect(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, String> {
    match tokio::time::timeout(timeout, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

pub(super) struct Liveness {
    pub(super) address: String,
    options: PgConnectOptions,
    /// How long a new connection may take (the pool's acquire timeout): longer, and the database is down,
    /// since calls could not get one either.
    connect_timeout: Duration,
    /// The health check's own connection; `None` after it broke, until the next check makes another.
    conn: Mutex<Option<PgConnection>>,
    up: AtomicBool,
    /// When the last outage was seen, in milliseconds after `epoch` (0: none yet).
    outage_at: AtomicU64,
    epoch: Instant,
}

impl Liveness {
    pub(super) fn new(
        address: String,
        options: PgConnectOptions,
        connect_timeout: Duration,
        conn: PgConnection,
    ) -> Self {
        Self {
            address,
            options,
            connect_timeout,
            conn: Mutex::new(Some(conn)),
            up: AtomicBool::new(true),
            outage_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Pings the database on the check's own connection within `timeout`, or else makes a new one (a
    /// connection the server closed, or a slow answer, is not an outage; no new connection is); records
    /// the answer.
    pub(super) async fn check(&self, timeout: Duration) -> Result<(), String> {
        let mut conn = self.conn.lock().await;
        let mut answer = Err(String::new());
        if let Some(open) = conn.as_mut() {
            answer = match tokio::time::timeout(timeout, open.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
        }
        if answer.is_err() {
            // A connection that failed is not trusted again: a new one proves the database answers.
            *conn = None;
            answer = connect(&self.options, self.connect_timeout)
                .await
                .map(|open| *conn = Some(open));
        }
        let up = answer.is_ok();
        if !up {
            let millis = self.epoch.elapsed().as_millis().max(1);
            self.outage_at
                .store(u64::try_from(millis).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        self.up.store(up, Ordering::Relaxed);
        answer
    }

    /// Whether a pooled connection `age` old was made after the last outage seen (so may be handed out).
    pub(super) fn made_since_outage(&self, age: Duration) -> bool {
        let outage_at = self.outage_at.load(Ordering::Relaxed);
        if outage_at == 0 {
            return true;
        }
        let made = self.epoch.elapsed().saturating_sub(age);
        made > Duration::from_millis(outage_at)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn an_address_names_host_port_database_and_user_but_never_the_password() {
        let tcp =
            PgConnectOptions::from_str("postgres://app:s3cret@db.internal:6543/assign").unwrap();
        assert_eq!(
            address(&tcp),
            "db.internal:6543 (database assign, user app)"
        );
        let socket =
            PgConnectOptions::from_str("postgres://app:s3cret@localhost:5433/assign?host=/run/pg")
                .unwrap();
        let text = address(&socket);
        assert_eq!(
            text,
            "Unix socket /run/pg/.s.PGSQL.5433 (database assign, user app)"
        );
        assert!(!text.contains("s3cret"));
    }
}
