use chrono::{DateTime, Utc};

use super::Store;
use crate::error::AppResult;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub event_id: i64,
    pub conversation_id: String,
    pub action: String,
    pub from_user_id: Option<String>,
    pub to_user_id: Option<String>,
    pub actor_id: Option<String>,
    pub source: String,
    pub occurred_at: DateTime<Utc>,
    pub request_id: Option<String>,
}

impl Store {
    /// One page of assignment events, oldest first; `conversation_id` `None` means the whole campaign.
    pub async fn list_events(
        &self,
        campaign_id: &str,
        conversation_id: Option<&str>,
        after_event_id: Option<i64>,
        limit: i64,
    ) -> AppResult<Vec<EventRow>> {
        Ok(sqlx::query_as(
            "SELECT event_id, conversation_id, action, from_user_id, to_user_id, actor_id, source, occurred_at, \
                    request_id \
             FROM assignment_events \
             WHERE campaign_id = $1 AND ($2::text IS NULL OR conversation_id = $2) \
               AND ($3::bigint IS NULL OR event_id > $3) \
             ORDER BY event_id LIMIT $4",
        )
        .bind(campaign_id)
        .bind(conversation_id)
        .bind(after_event_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }
}
