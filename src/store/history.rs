//! The history of assignment changes.

use super::Conn;
use crate::domain::model::AssignmentEvent;
use crate::error::AppResult;

/// One page of assignment events, oldest first; `conversation_id` `None` means the whole campaign.
pub async fn list(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: Option<&str>,
    after_event_id: Option<i64>,
    limit: i64,
) -> AppResult<Vec<AssignmentEvent>> {
    Ok(sqlx::query_as(
        "SELECT event_id, conversation_id, action, from_user_id, to_user_id, actor_id, source, occurred_at, \
                request_id, user_id, availability, cause \
         FROM assignment_events \
         WHERE campaign_id = $1 AND ($2::text IS NULL OR conversation_id = $2) \
           AND ($3::bigint IS NULL OR event_id > $3) \
         ORDER BY event_id LIMIT $4",
    )
    .bind(campaign_id)
    .bind(conversation_id)
    .bind(after_event_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
