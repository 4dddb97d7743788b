//! The history of assignment changes, in feed order.

use super::Conn;
use super::feed::EVENT_COLUMNS;
use crate::domain::model::AssignmentEvent;
use crate::error::AppResult;

/// One page of numbered events in feed order, after feed number `after`; `conversation_id` `None` means
/// the whole campaign.
pub async fn list(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> AppResult<Vec<AssignmentEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM assignment_events e \
         WHERE e.campaign_id = $1 AND e.seq IS NOT NULL AND ($2::text IS NULL OR e.conversation_id = $2) \
           AND ($3::bigint IS NULL OR e.seq > $3) \
         ORDER BY e.seq LIMIT $4"
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(conversation_id)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// The newest of the campaign's committed events not numbered yet (`None`: every one is numbered).
pub async fn newest_unnumbered(conn: &mut Conn, campaign_id: &str) -> AppResult<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT max(event_id) FROM assignment_events WHERE campaign_id = $1 AND seq IS NULL",
    )
    .bind(campaign_id)
    .fetch_one(conn)
    .await?)
}

/// Whether every committed event of the campaign up to `event_id` is numbered.
pub async fn numbered_through(
    conn: &mut Conn,
    campaign_id: &str,
    event_id: i64,
) -> AppResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM assignment_events \
          WHERE campaign_id = $1 AND seq IS NULL AND event_id <= $2)",
    )
    .bind(campaign_id)
    .bind(event_id)
    .fetch_one(conn)
    .await?)
}
