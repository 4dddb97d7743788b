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

/// Deletes `records` older than `retention`, campaign by campaign and a chunk at a time: no statement runs
/// long, and each delete names its campaign (on a distributed PostgreSQL, one node's; under
/// `--single-campaign-transactions`, one campaign's). Finding the next campaign with old records reads the
/// age index across campaigns.
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
    let cutoff: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now() - make_interval(secs => $1)")
            .bind(retention.as_secs_f64()) // $1 retention in seconds
            .fetch_one(&mut *conn)
            .await?;
    let next_campaign = format!("SELECT campaign_id FROM {table} WHERE {made_at} < $1 LIMIT 1");
    let delete = format!(
        "DELETE FROM {table} WHERE campaign_id = $1 AND ({key}) IN ( \
           SELECT {key} FROM {table} WHERE campaign_id = $1 AND {made_at} < $2 LIMIT $3)"
    );
    let mut total = 0;
    while let Some(campaign_id) = sqlx::query_scalar::<_, String>(&next_campaign)
        .bind(cutoff) // $1 cutoff
        .fetch_optional(&mut *conn)
        .await?
    {
        loop {
            let deleted = sqlx::query(&delete)
                .bind(&campaign_id) // $1 campaign_id
                .bind(cutoff) // $2 cutoff
                .bind(CHUNK as i64) // $3 chunk
                .execute(&mut *conn)
                .await?
                .rows_affected();
            total += deleted;
            if deleted < CHUNK {
                break;
            }
        }
    }
    Ok(total)
}
