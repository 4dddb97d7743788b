use chrono::{DateTime, Utc};

use super::{ChangeContext, Store, grant_exists};
use crate::domain::model::{AssignmentAction, AssignmentSource, ConversationStatus, Role, UserRef};
use crate::error::AppResult;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationRow {
    pub conversation_id: String,
    pub member_id: String,
    pub member_tags: Vec<String>,
    pub status: String,
    pub assignee_id: Option<String>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub assigned_by: Option<String>,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

pub(super) const COLUMNS: &str = "c.conversation_id, c.member_id, c.member_tags, c.status, c.assignee_id, \
                       c.assigned_at, c.assigned_by, c.version, c.updated_at";

/// A conversation as one user sees it: the row plus what their access groups grant them on it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ViewedConversation {
    #[sqlx(flatten)]
    pub conversation: ConversationRow,
    pub group_view: bool,
    pub group_reply: bool,
}

/// A conversation locked `FOR UPDATE` for a change, with the facts the rules need.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedConversation {
    #[sqlx(flatten)]
    pub conversation: ConversationRow,
    pub actor_can_view: bool,
    target_user_id: Option<String>,
    target_role: Option<String>,
    target_active: Option<bool>,
}

impl LockedConversation {
    /// The user the change would assign to, if the request named one that exists.
    pub fn target(&self) -> Option<UserRef> {
        Some(UserRef {
            user_id: self.target_user_id.clone()?,
            role: Role::from_db(self.target_role.as_deref()?),
            active: self.target_active?,
        })
    }
}

/// What the caller of a change wants written once the rules have spoken.
pub enum Write {
    Nothing,
    Assignee {
        action: AssignmentAction,
        to: Option<String>,
    },
    Status(ConversationStatus),
}

#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub assignee_id: Option<String>,
    pub unassigned: bool,
    pub status: Option<ConversationStatus>,
}

impl Store {
    /// Creates a conversation or updates its member data. Returns the row and whether it was created.
    pub async fn upsert_conversation(
        &self,
        campaign_id: &str,
        conversation_id: &str,
        member_id: &str,
        member_tags: &[String],
    ) -> AppResult<(ConversationRow, bool)> {
        let sql = format!(
            "INSERT INTO conversations AS c (campaign_id, conversation_id, member_id, member_tags) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (campaign_id, conversation_id) DO UPDATE \
               SET member_id = EXCLUDED.member_id, member_tags = EXCLUDED.member_tags, \
                   version = c.version + 1, updated_at = now() \
               WHERE (c.member_id, c.member_tags) IS DISTINCT FROM (EXCLUDED.member_id, EXCLUDED.member_tags) \
             RETURNING {COLUMNS}, (xmax = 0) AS created"
        );
        let upserted: Option<Upserted> = sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(conversation_id)
            .bind(member_id)
            .bind(member_tags)
            .fetch_optional(self.pool())
            .await?;
        match upserted {
            Some(row) => Ok((row.conversation, row.created)),
            // Nothing differed, so nothing was written: return the row as it stands.
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM conversations c WHERE c.campaign_id = $1 AND c.conversation_id = $2"
                );
                let row = sqlx::query_as(&sql)
                    .bind(campaign_id)
                    .bind(conversation_id)
                    .fetch_one(self.pool())
                    .await?;
                Ok((row, false))
            }
        }
    }

    /// A conversation with what `viewer_id`'s access groups grant on it.
    pub async fn view_conversation(
        &self,
        campaign_id: &str,
        conversation_id: &str,
        viewer_id: &str,
    ) -> AppResult<Option<ViewedConversation>> {
        let sql = format!(
            "SELECT {COLUMNS}, {} AS group_view, {} AS group_reply \
             FROM conversations c WHERE c.campaign_id = $1 AND c.conversation_id = $2",
            grant_exists("$3", "can_view"),
            grant_exists("$3", "can_reply"),
        );
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(conversation_id)
            .bind(viewer_id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// One page of conversations ordered by id. `organizer_id` limits the page to what that organizer can
    /// view (through a group, or because they hold it); `None` shows everything (admins).
    pub async fn list_conversations(
        &self,
        campaign_id: &str,
        organizer_id: Option<&str>,
        filter: &ConversationFilter,
        after: Option<&str>,
        limit: i64,
    ) -> AppResult<Vec<ConversationRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM conversations c \
             WHERE c.campaign_id = $1 \
               AND ($2::text IS NULL OR c.assignee_id = $2 OR {}) \
               AND ($3::text IS NULL OR c.assignee_id = $3) \
               AND (NOT $4 OR c.assignee_id IS NULL) \
               AND ($5::text IS NULL OR c.status = $5) \
               AND ($6::text IS NULL OR c.conversation_id > $6) \
             ORDER BY c.conversation_id LIMIT $7",
            grant_exists("$2", "can_view"),
        );
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(organizer_id)
            .bind(filter.assignee_id.as_deref())
            .bind(filter.unassigned)
            .bind(filter.status.map(ConversationStatus::as_db))
            .bind(after)
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// The one way a conversation changes: lock its row, let `decide` apply the rules to what is there now,
    /// write the outcome (with its history event) and commit. Two racing callers serialise on the row lock,
    /// so the second decides on the first one's result. Returns the row after the change and whether it
    /// changed; an error from `decide` rolls everything back.
    pub async fn change_conversation<F>(
        &self,
        context: ChangeContext<'_>,
        conversation_id: &str,
        target_id: Option<&str>,
        source: AssignmentSource,
        decide: F,
    ) -> AppResult<Option<(ConversationRow, bool)>>
    where
        F: FnOnce(&LockedConversation) -> AppResult<Write>,
    {
        let ChangeContext {
            campaign_id,
            actor_id,
            request_id,
        } = context;
        let mut tx = self.pool().begin().await?;
        let sql = format!(
            "SELECT {COLUMNS}, {} AS actor_can_view, \
                    t.user_id AS target_user_id, t.role AS target_role, t.active AS target_active \
             FROM conversations c \
             LEFT JOIN users t ON t.campaign_id = c.campaign_id AND t.user_id = $4 \
             WHERE c.campaign_id = $1 AND c.conversation_id = $2 \
             FOR UPDATE OF c",
            grant_exists("$3", "can_view"),
        );
        let locked: Option<LockedConversation> = sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(conversation_id)
            .bind(actor_id)
            .bind(target_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(locked) = locked else {
            return Ok(None);
        };
        let row = match decide(&locked)? {
            Write::Nothing => {
                tx.commit().await?;
                return Ok(Some((locked.conversation, false)));
            }
            Write::Assignee { action, to } => {
                let sql = format!(
                    "WITH updated AS ( \
                       UPDATE conversations c \
                          SET assignee_id = $3::text, \
                              assigned_at = CASE WHEN $3::text IS NULL THEN NULL ELSE now() END, \
                              assigned_by = CASE WHEN $3::text IS NULL THEN NULL ELSE $4::text END, \
                              version = c.version + 1, updated_at = now() \
                        WHERE c.campaign_id = $1 AND c.conversation_id = $2 \
                       RETURNING c.* \
                     ), event AS ( \
                       INSERT INTO assignment_events \
                              (campaign_id, conversation_id, action, from_user_id, to_user_id, actor_id, source, \
                               request_id) \
                       SELECT campaign_id, conversation_id, $5, $6, $3::text, $4::text, $7, $8 FROM updated \
                     ) \
                     SELECT {COLUMNS} FROM updated c"
                );
                sqlx::query_as(&sql)
                    .bind(campaign_id)
                    .bind(conversation_id)
                    .bind(to.as_deref())
                    .bind(actor_id)
                    .bind(action.as_db())
                    .bind(locked.conversation.assignee_id.as_deref())
                    .bind(source.as_db())
                    .bind(request_id)
                    .fetch_one(&mut *tx)
                    .await?
            }
            Write::Status(status) => {
                let sql = format!(
                    "UPDATE conversations c SET status = $3, version = c.version + 1, updated_at = now() \
                     WHERE c.campaign_id = $1 AND c.conversation_id = $2 RETURNING {COLUMNS}"
                );
                sqlx::query_as(&sql)
                    .bind(campaign_id)
                    .bind(conversation_id)
                    .bind(status.as_db())
                    .fetch_one(&mut *tx)
                    .await?
            }
        };
        tx.commit().await?;
        Ok(Some((row, true)))
    }
}

#[derive(sqlx::FromRow)]
struct Upserted {
    #[sqlx(flatten)]
    conversation: ConversationRow,
    created: bool,
}
