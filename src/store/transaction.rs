//! A transaction that never goes back to the pool open, whatever moment its call is cancelled at.
//!
//! sqlx's own `Transaction` counts its depth only once `BEGIN` has answered: a call cancelled (client
//! cancel, deadline, drain) while its `BEGIN` was on the wire returned the connection to the pool inside a
//! transaction nobody knew of. The next call on that connection then ran inside it ("there is already a
//! transaction in progress"), and a read left it `idle in transaction`, holding whatever it had locked.
//! Here the transaction counts as open from before `BEGIN` is sent: dropping it unfinished, wherever its
//! call stopped, rolls it back before the connection can be handed out again.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgConnection, Postgres};

/// A transaction on a pooled connection: run queries on `&mut *tx`, end it with [`Tx::commit`] or by
/// dropping it (a rollback).
pub struct Tx {
    conn: Option<PoolConnection<Postgres>>,
    /// Whether a drop must roll back: from before `BEGIN` is sent until `COMMIT` is.
    open: bool,
}

impl Tx {
    /// Sends `begin` (a `BEGIN`, possibly with `SET LOCAL`s, in one round trip) on `conn`.
    pub(super) async fn begin(
        conn: PoolConnection<Postgres>,
        begin: &'static str,
    ) -> Result<Self, sqlx::Error> {
        // Open before the BEGIN goes out: a cancellation from here on rolls back.
        let mut tx = Self {
            conn: Some(conn),
            open: true,
        };
        tx.execute(begin).await?;
        Ok(tx)
    }

    /// Commits. Once `COMMIT` is sent the transaction ends whatever happens: cancelled while it is on the
    /// wire, the connection still returns to the pool outside any transaction (the pool reads the
    /// answer before handing it out), but whether the commit took effect is unknown to the caller.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.open = false;
        self.execute("COMMIT").await?;
        Ok(())
    }

    /// Runs `statement` (no parameters: a simple query) and commits, in one round trip: for what belongs
    /// right before the commit, such as notifications (see `store::notices::commit_notifying`).
    pub async fn commit_after(mut self, statement: String) -> Result<(), sqlx::Error> {
        self.open = false;
        let statements = format!("{statement}; COMMIT");
        self.execute(statements.as_str()).await?;
        Ok(())
    }

    /// Rolls back and waits for it (dropping the transaction rolls back too, without waiting).
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        self.open = false;
        self.execute("ROLLBACK").await?;
        Ok(())
    }
}

impl Deref for Tx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a transaction keeps its connection until dropped")
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a transaction keeps its connection until dropped")
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take().filter(|_| self.open) else {
            return;
        };
        // A statement of this transaction may still be on the wire: the ROLLBACK first reads its answer
        // (sqlx waits until the connection is ready), then ends the transaction, and only then does the
        // connection go back to the pool. Without a runtime to do that, the connection is closed instead.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(err) = conn.execute("ROLLBACK").await {
                        tracing::debug!(%err, "rollback of a dropped transaction failed; closing its connection");
                        conn.close_on_drop();
                    }
                });
            }
            Err(_) => conn.close_on_drop(),
        }
    }
}
