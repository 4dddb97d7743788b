use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, scope_covers};
use crate::domain::access_group::{Permissions, Scope};
use crate::error::{AppError, AppResult};

/// An access group with its members and explicit conversations.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessGroupRow {
    pub access_group_id: Uuid,
    pub name: String,
    pub can_view: bool,
    pub can_reply: bool,
    pub scope_all: bool,
    pub scope_tags: Vec<String>,
    pub conversation_ids: Vec<String>,
    pub organizer_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `lower(name)` as the database computes it: the listing order and page-token key.
    pub name_key: String,
}

/// A group with its active organizers and how many selected conversations it covers with reply.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CoverageRow {
    pub access_group_id: Uuid,
    pub name: String,
    pub organizer_ids: Vec<String>,
    pub covered: i64,
}

/// A group that grants a user something on one conversation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRow {
    pub access_group_id: Uuid,
    pub name: String,
    pub can_view: bool,
    pub can_reply: bool,
}

pub struct NewGroup {
    pub name: String,
    pub permissions: Permissions,
    pub scope: Scope,
    pub organizer_ids: Vec<String>,
}

/// The fields an update sets; `None` leaves a field as it is.
pub struct GroupChanges {
    pub name: Option<String>,
    pub permissions: Option<Permissions>,
    pub scope: Option<Scope>,
}

const GROUP_SELECT: &str = "SELECT g.access_group_id, g.name, g.can_view, g.can_reply, g.scope_all, g.scope_tags, \
       COALESCE((SELECT array_agg(x.conversation_id ORDER BY x.conversation_id) FROM access_group_conversations x \
                  WHERE x.campaign_id = g.campaign_id AND x.access_group_id = g.access_group_id), '{}') \
         AS conversation_ids, \
       COALESCE((SELECT array_agg(o.user_id ORDER BY o.user_id) FROM access_group_organizers o \
                  WHERE o.campaign_id = g.campaign_id AND o.access_group_id = g.access_group_id), '{}') \
         AS organizer_ids, \
       g.created_at, g.updated_at, lower(g.name) AS name_key \
  FROM access_groups g";

/// Postgres' unique_violation, raised here only by the per-campaign group name index.
fn name_taken(err: sqlx::Error, name: &str) -> AppError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            AppError::already_exists(
                "ACCESS_GROUP_NAME_TAKEN",
                format!(
                    "an access group named {name:?} already exists in this campaign; choose another name"
                ),
            )
        }
        _ => AppError::Database(err),
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

impl Store {
    /// Conversation ids of `ids` that do not exist in the campaign.
    pub async fn missing_conversations(
        &self,
        campaign_id: &str,
        ids: &[String],
    ) -> AppResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM unnest($2::text[]) AS id \
             WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.campaign_id = $1 AND c.conversation_id = id) \
             ORDER BY id",
        )
        .bind(campaign_id)
        .bind(ids)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn create_access_group(
        &self,
        campaign_id: &str,
        group: &NewGroup,
    ) -> AppResult<AccessGroupRow> {
        let id = Uuid::new_v4();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO access_groups (campaign_id, access_group_id, name, can_view, can_reply, scope_all, scope_tags) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(campaign_id)
        .bind(id)
        .bind(&group.name)
        .bind(group.permissions.view)
        .bind(group.permissions.reply)
        .bind(group.scope.all_conversations)
        .bind(&group.scope.member_tags)
        .execute(&mut *tx)
        .await
        .map_err(|e| name_taken(e, &group.name))?;
        insert_scope_conversations(&mut tx, campaign_id, id, &group.scope.conversation_ids).await?;
        insert_organizers(&mut tx, campaign_id, id, &group.organizer_ids).await?;
        let row = fetch_group(&mut tx, campaign_id, id)
            .await?
            .expect("inserted in this transaction");
        tx.commit().await?;
        Ok(row)
    }

    pub async fn get_access_group(
        &self,
        campaign_id: &str,
        id: Uuid,
    ) -> AppResult<Option<AccessGroupRow>> {
        let sql = format!("{GROUP_SELECT} WHERE g.campaign_id = $1 AND g.access_group_id = $2");
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// One page of groups ordered by name (case-insensitive, as names are unique that way).
    pub async fn list_access_groups(
        &self,
        campaign_id: &str,
        member_id: Option<&str>,
        after_name: Option<&str>,
        limit: i64,
    ) -> AppResult<Vec<AccessGroupRow>> {
        let sql = format!(
            "{GROUP_SELECT} WHERE g.campaign_id = $1 \
               AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM access_group_organizers o \
                     WHERE o.campaign_id = g.campaign_id AND o.access_group_id = g.access_group_id AND o.user_id = $2)) \
               AND ($3::text IS NULL OR lower(g.name) > $3) \
             ORDER BY lower(g.name) LIMIT $4"
        );
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(member_id)
            .bind(after_name)
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// Applies the set fields; a new scope replaces the old one whole. `None` when the group does not exist.
    pub async fn update_access_group(
        &self,
        campaign_id: &str,
        id: Uuid,
        changes: &GroupChanges,
    ) -> AppResult<Option<AccessGroupRow>> {
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE access_groups SET name = COALESCE($3, name), \
                    can_view = COALESCE($4, can_view), can_reply = COALESCE($5, can_reply), \
                    scope_all = COALESCE($6, scope_all), scope_tags = COALESCE($7, scope_tags), \
                    updated_at = now() \
             WHERE campaign_id = $1 AND access_group_id = $2",
        )
        .bind(campaign_id)
        .bind(id)
        .bind(changes.name.as_deref())
        .bind(changes.permissions.map(|p| p.view))
        .bind(changes.permissions.map(|p| p.reply))
        .bind(changes.scope.as_ref().map(|s| s.all_conversations))
        .bind(changes.scope.as_ref().map(|s| &s.member_tags))
        .execute(&mut *tx)
        .await
        .map_err(|e| name_taken(e, changes.name.as_deref().unwrap_or_default()))?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        if let Some(scope) = &changes.scope {
            sqlx::query("DELETE FROM access_group_conversations WHERE campaign_id = $1 AND access_group_id = $2")
                .bind(campaign_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            insert_scope_conversations(&mut tx, campaign_id, id, &scope.conversation_ids).await?;
        }
        let row = fetch_group(&mut tx, campaign_id, id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Whether a group was deleted.
    pub async fn delete_access_group(&self, campaign_id: &str, id: Uuid) -> AppResult<bool> {
        let deleted = sqlx::query(
            "DELETE FROM access_groups WHERE campaign_id = $1 AND access_group_id = $2",
        )
        .bind(campaign_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Adds (`add`) or removes organizers. `None` when the group does not exist.
    pub async fn change_group_members(
        &self,
        campaign_id: &str,
        id: Uuid,
        organizer_ids: &[String],
        add: bool,
    ) -> AppResult<Option<AccessGroupRow>> {
        let mut tx = self.pool().begin().await?;
        // Locking the group row keeps a concurrent delete from racing the membership change.
        let touched = sqlx::query(
            "UPDATE access_groups SET updated_at = now() WHERE campaign_id = $1 AND access_group_id = $2",
        )
        .bind(campaign_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if touched.rows_affected() == 0 {
            return Ok(None);
        }
        if add {
            insert_organizers(&mut tx, campaign_id, id, organizer_ids).await?;
        } else {
            sqlx::query(
                "DELETE FROM access_group_organizers \
                 WHERE campaign_id = $1 AND access_group_id = $2 AND user_id = ANY($3)",
            )
            .bind(campaign_id)
            .bind(id)
            .bind(organizer_ids)
            .execute(&mut *tx)
            .await?;
        }
        let row = fetch_group(&mut tx, campaign_id, id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Whether a group of this name (ignoring case) exists.
    pub async fn access_group_name_taken(&self, campaign_id: &str, name: &str) -> AppResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM access_groups WHERE campaign_id = $1 AND lower(name) = lower($2))",
        )
        .bind(campaign_id)
        .bind(name)
        .fetch_one(self.pool())
        .await?)
    }

    /// The active organizers of each of these groups (that exist), by user id.
    pub async fn active_group_organizers(
        &self,
        campaign_id: &str,
        ids: &[Uuid],
    ) -> AppResult<Vec<(Uuid, Vec<String>)>> {
        Ok(sqlx::query_as(
            "SELECT g.access_group_id, ARRAY(SELECT o.user_id FROM access_group_organizers o \
                      JOIN users u ON u.campaign_id = o.campaign_id AND u.user_id = o.user_id \
                     WHERE o.campaign_id = g.campaign_id AND o.access_group_id = g.access_group_id \
                       AND u.active AND u.role = 'ORGANIZER' \
                     ORDER BY o.user_id COLLATE \"C\") \
             FROM access_groups g WHERE g.campaign_id = $1 AND g.access_group_id = ANY($2)",
        )
        .bind(campaign_id)
        .bind(ids)
        .fetch_all(self.pool())
        .await?)
    }

    /// Every group of the campaign with its active organizers and how many of `conversation_ids` it lets
    /// them view and reply to.
    pub async fn groups_covering(
        &self,
        campaign_id: &str,
        conversation_ids: &[String],
    ) -> AppResult<Vec<CoverageRow>> {
        let sql = format!(
            "SELECT g.access_group_id, g.name, \
                    ARRAY(SELECT o.user_id FROM access_group_organizers o \
                            JOIN users u ON u.campaign_id = o.campaign_id AND u.user_id = o.user_id \
                           WHERE o.campaign_id = g.campaign_id AND o.access_group_id = g.access_group_id \
                             AND u.active AND u.role = 'ORGANIZER' \
                           ORDER BY o.user_id COLLATE \"C\") AS organizer_ids, \
                    CASE WHEN g.can_reply THEN (SELECT count(*) FROM conversations c \
                          WHERE c.campaign_id = g.campaign_id AND c.conversation_id = ANY($2) AND {}) \
                         ELSE 0 END AS covered \
             FROM access_groups g WHERE g.campaign_id = $1 ORDER BY lower(g.name)",
            scope_covers("g", "c")
        );
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(conversation_ids)
            .fetch_all(self.pool())
            .await?)
    }

    /// The groups through which `user_id` may view (and perhaps reply to) the conversation.
    pub async fn grants(
        &self,
        campaign_id: &str,
        user_id: &str,
        conversation_id: &str,
    ) -> AppResult<Vec<GrantRow>> {
        let sql = format!(
            "SELECT g.access_group_id, g.name, g.can_view, g.can_reply \
             FROM access_groups g \
             JOIN access_group_organizers m ON m.campaign_id = g.campaign_id \
                  AND m.access_group_id = g.access_group_id AND m.user_id = $2 \
             JOIN conversations c ON c.campaign_id = g.campaign_id AND c.conversation_id = $3 \
             WHERE g.campaign_id = $1 AND g.can_view AND {} \
             ORDER BY lower(g.name)",
            scope_covers("g", "c")
        );
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(user_id)
            .bind(conversation_id)
            .fetch_all(self.pool())
            .await?)
    }
}

async fn insert_organizers(
    tx: &mut Tx<'_>,
    campaign_id: &str,
    id: Uuid,
    organizer_ids: &[String],
) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO access_group_organizers (campaign_id, access_group_id, user_id) \
         SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(campaign_id)
    .bind(id)
    .bind(organizer_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_scope_conversations(
    tx: &mut Tx<'_>,
    campaign_id: &str,
    id: Uuid,
    conversation_ids: &[String],
) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO access_group_conversations (campaign_id, access_group_id, conversation_id) \
         SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(campaign_id)
    .bind(id)
    .bind(conversation_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn fetch_group(
    tx: &mut Tx<'_>,
    campaign_id: &str,
    id: Uuid,
) -> AppResult<Option<AccessGroupRow>> {
    let sql = format!("{GROUP_SELECT} WHERE g.campaign_id = $1 AND g.access_group_id = $2");
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}
