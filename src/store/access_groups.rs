//! Access groups: who (organizers) may view or reply to what (all, tagged or listed conversations).
//! Functions that write several statements expect to run in the caller's transaction.

use uuid::Uuid;

use super::{Conn, is_unique_violation, scope_covers};
use crate::domain::access_group::{AccessGroup, GroupChanges, GroupCoverage, GroupGrant, NewGroup};
use crate::error::{AppError, AppResult};

const GROUP_SELECT: &str = "SELECT g.access_group_id, g.name, g.can_view, g.can_reply, g.scope_all, g.scope_tags, \
       COALESCE((SELECT array_agg(x.conversation_id ORDER BY x.conversation_id) FROM access_group_conversations x \
                  WHERE x.campaign_id = g.campaign_id AND x.access_group_id = g.access_group_id), '{}') \
         AS conversation_ids, \
       COALESCE((SELECT array_agg(o.user_id ORDER BY o.user_id) FROM access_group_organizers o \
                  WHERE o.campaign_id = g.campaign_id AND o.access_group_id = g.access_group_id), '{}') \
         AS organizer_ids, \
       g.created_at, g.updated_at, lower(g.name) AS name_key \
  FROM access_groups g";

/// A unique violation here can only come from the per-campaign group name index.
pub(super) fn name_taken(err: sqlx::Error, name: &str) -> AppError {
    if is_unique_violation(&err) {
        AppError::access_group_name_taken(name)
    } else {
        AppError::Database(err)
    }
}

/// Creates a group with its scope listing and members.
pub async fn create(
    conn: &mut Conn,
    campaign_id: &str,
    id: Uuid,
    group: &NewGroup,
) -> AppResult<AccessGroup> {
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
    .execute(&mut *conn)
    .await
    .map_err(|e| name_taken(e, &group.name))?;
    insert_scope_conversations(conn, campaign_id, id, &group.scope.conversation_ids).await?;
    insert_organizers(conn, campaign_id, id, &group.organizer_ids).await?;
    let created = fetch_group(conn, campaign_id, id).await?;
    Ok(created.expect("inserted in this transaction"))
}

pub async fn get(conn: &mut Conn, campaign_id: &str, id: Uuid) -> AppResult<Option<AccessGroup>> {
    let sql = format!("{GROUP_SELECT} WHERE g.campaign_id = $1 AND g.access_group_id = $2");
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// One page of groups ordered by name (case-insensitive, as names are unique that way).
pub async fn list(
    conn: &mut Conn,
    campaign_id: &str,
    member_id: Option<&str>,
    after_name: Option<&str>,
    limit: i64,
) -> AppResult<Vec<AccessGroup>> {
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
        .fetch_all(&mut *conn)
        .await?)
}

/// Applies the set fields; a new scope replaces the old one whole. `None` when the group does not exist.
pub async fn update(
    conn: &mut Conn,
    campaign_id: &str,
    id: Uuid,
    changes: &GroupChanges,
) -> AppResult<Option<AccessGroup>> {
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
    .execute(&mut *conn)
    .await
    .map_err(|e| name_taken(e, changes.name.as_deref().unwrap_or_default()))?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    if let Some(scope) = &changes.scope {
        sqlx::query("DELETE FROM access_group_conversations WHERE campaign_id = $1 AND access_group_id = $2")
            .bind(campaign_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        insert_scope_conversations(conn, campaign_id, id, &scope.conversation_ids).await?;
    }
    let row = fetch_group(conn, campaign_id, id).await?;
    Ok(row)
}

/// Whether a group was deleted.
pub async fn delete(conn: &mut Conn, campaign_id: &str, id: Uuid) -> AppResult<bool> {
    let deleted =
        sqlx::query("DELETE FROM access_groups WHERE campaign_id = $1 AND access_group_id = $2")
            .bind(campaign_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Adds (`add`) or removes organizers. `None` when the group does not exist.
pub async fn change_members(
    conn: &mut Conn,
    campaign_id: &str,
    id: Uuid,
    organizer_ids: &[String],
    add: bool,
) -> AppResult<Option<AccessGroup>> {
    // Locking the group row keeps a concurrent delete from racing the membership change.
    let touched = sqlx::query(
        "UPDATE access_groups SET updated_at = now() WHERE campaign_id = $1 AND access_group_id = $2",
    )
    .bind(campaign_id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if touched.rows_affected() == 0 {
        return Ok(None);
    }
    if add {
        insert_organizers(conn, campaign_id, id, organizer_ids).await?;
    } else {
        sqlx::query(
            "DELETE FROM access_group_organizers \
             WHERE campaign_id = $1 AND access_group_id = $2 AND user_id = ANY($3)",
        )
        .bind(campaign_id)
        .bind(id)
        .bind(organizer_ids)
        .execute(&mut *conn)
        .await?;
    }
    let row = fetch_group(conn, campaign_id, id).await?;
    Ok(row)
}

/// Whether a group of this name (in normal form, ignoring case: the unique index's key) exists.
pub async fn is_name_taken(conn: &mut Conn, campaign_id: &str, name: &str) -> AppResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM access_groups \
         WHERE campaign_id = $1 AND lower(normal_text(name)) = lower(normal_text($2)))",
    )
    .bind(campaign_id)
    .bind(name)
    .fetch_one(&mut *conn)
    .await?)
}

/// The active organizers of each of these groups (that exist), by user id.
pub async fn active_group_organizers(
    conn: &mut Conn,
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
    .fetch_all(&mut *conn)
    .await?)
}

/// Every group of the campaign with its active organizers and how many of `conversation_ids` it lets
/// them view and reply to.
pub async fn coverage(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_ids: &[String],
) -> AppResult<Vec<GroupCoverage>> {
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
        .fetch_all(&mut *conn)
        .await?)
}

/// The groups through which `user_id` may view (and perhaps reply to) the conversation.
pub async fn grants(
    conn: &mut Conn,
    campaign_id: &str,
    user_id: &str,
    conversation_id: &str,
) -> AppResult<Vec<GroupGrant>> {
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
        .fetch_all(&mut *conn)
        .await?)
}

async fn insert_organizers(
    conn: &mut Conn,
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_scope_conversations(
    conn: &mut Conn,
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn fetch_group(
    conn: &mut Conn,
    campaign_id: &str,
    id: Uuid,
) -> AppResult<Option<AccessGroup>> {
    let sql = format!("{GROUP_SELECT} WHERE g.campaign_id = $1 AND g.access_group_id = $2");
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}
