//! How long trigger ids (and reply message ids) are remembered.

use crate::error::AppResult;
use crate::store::Conn;

/// Forgets trigger records older than `retention`. Returns how many were deleted.
pub async fn prune_triggers(conn: &mut Conn, retention: std::time::Duration) -> AppResult<u64> {
    prune(conn, &TRIGGERS, retention).await
}

/// Forgets reply records older than `retention` (a retried report comes within minutes). Returns how many
/// were deleted.
pub async fn prune_replies(conn: &mut Conn, retention: std::time::Duration) -> AppResult<u64> {
    prune(conn, &REPLIES, retention).await
}

/// A table of records kept for deduplicating retries: its name, key and the time a record was made.
struct Remembered {
    table: &'static str,
    key: &'static str,
    made_at: &'static str,
}

const TRIGGERS: Remembered = Remembered {
    table: "auto_assign_triggers",
    key: "campaign_id, trigger_id",
    made_at: "received_at",
};

const REPLIES: Remembered = Remembered {
    table: "replies",
    key: "campaign_id, message_id",
    made_at: "sent_at",
};

/// Deletes `records` older than `retention`, a chunk at a time so no statement runs long.
async fn prune(
    conn: &mut Conn,
    records: &Remembered,
    retention: std::time::Duration,
) -> AppResult<u64> {
    const CHUNK: u64 = 5000;
    let Remembered {
        table,
        key,
        made_at,
    } = records;
    let sql = format!(
        "DELETE FROM {table} WHERE ({key}) IN ( \
           SELECT {key} FROM {table} WHERE {made_at} < now() - make_interval(secs => $1) LIMIT $2)"
    );
    let mut total = 0;
    loop {
        let deleted = sqlx::query(&sql)
            .bind(retention.as_secs_f64()) // $1 retention in seconds
            .bind(CHUNK as i64) // $2 chunk
            .execute(&mut *conn)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < CHUNK {
            return Ok(total);
        }
    }
}
