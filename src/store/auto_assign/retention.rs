//! How long trigger ids are remembered.

use crate::error::AppResult;
use crate::store::Conn;

/// Forgets trigger records older than `retention`, a chunk at a time so no statement runs long.
/// Returns how many were deleted.
pub async fn prune_triggers(conn: &mut Conn, retention: std::time::Duration) -> AppResult<u64> {
    const CHUNK: u64 = 5000;
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM auto_assign_triggers WHERE (campaign_id, trigger_id) IN ( \
               SELECT campaign_id, trigger_id FROM auto_assign_triggers \
                WHERE received_at < now() - make_interval(secs => $1) LIMIT $2)",
        )
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
