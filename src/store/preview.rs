//! What PreviewAutoAssign reads: every user with their open conversations, who may reply, and where the
//! round-robin stands. Plain reads: a preview changes nothing and takes no lock.

use std::collections::HashMap;

use super::Conn;
use super::rules::{eligible as eligible_for, may_reply};
use crate::domain::model::User;
use crate::error::AppResult;

/// Every user of the campaign, by id.
pub async fn users(conn: &mut Conn, campaign_id: &str) -> AppResult<Vec<User>> {
    Ok(sqlx::query_as(
        "SELECT user_id, role, display_name, active, updated_at, availability, capacity \
         FROM users WHERE campaign_id = $1 ORDER BY user_id COLLATE \"C\"",
    )
    .bind(campaign_id)
    .fetch_all(conn)
    .await?)
}

/// Open conversations per assignee, as routing counts them: the folded count plus the pending changes.
pub async fn open_counts(conn: &mut Conn, campaign_id: &str) -> AppResult<HashMap<String, u32>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, sum(open)::bigint FROM ( \
           SELECT user_id, open FROM organizer_loads WHERE campaign_id = $1 \
           UNION ALL \
           SELECT user_id, delta FROM organizer_load_changes WHERE campaign_id = $1) AS loads \
         GROUP BY user_id",
    )
    .bind(campaign_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user, open)| (user, u32::try_from(open).unwrap_or(0)))
        .collect())
}

/// The organizers an access group lets reply to the conversation; with no conversation, to one that every
/// group granting reply covers (any member of such a group).
pub async fn repliers(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: Option<&str>,
) -> AppResult<Vec<String>> {
    let rows = match conversation_id {
        Some(id) => {
            let sql = format!(
                "SELECT u.user_id FROM users u \
                   JOIN conversations c ON c.campaign_id = u.campaign_id AND c.conversation_id = $2 \
                  WHERE u.campaign_id = $1 AND {}",
                may_reply("u.user_id", "c")
            );
            sqlx::query_scalar(&sql)
                .bind(campaign_id)
                .bind(id)
                .fetch_all(conn)
                .await?
        }
        None => {
            sqlx::query_scalar(
                "SELECT DISTINCT m.user_id FROM access_group_organizers m \
                   JOIN access_groups g ON g.campaign_id = m.campaign_id \
                        AND g.access_group_id = m.access_group_id \
                  WHERE m.campaign_id = $1 AND g.can_reply",
            )
            .bind(campaign_id)
            .fetch_all(conn)
            .await?
        }
    };
    Ok(rows)
}

/// The users auto-assignment may give the conversation to, capacity aside ([`eligible_for`], the rule a
/// batch applies), sorted by id: the preview's candidates whose only reason, if any, is `AtCapacity`.
pub async fn eligible(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: &str,
) -> AppResult<Vec<String>> {
    let sql = format!(
        "SELECT u.user_id FROM users u \
           JOIN conversations c ON c.campaign_id = u.campaign_id AND c.conversation_id = $2 \
          WHERE u.campaign_id = $1 AND {} ORDER BY u.user_id COLLATE \"C\"",
        eligible_for("u", "c")
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(campaign_id)
        .bind(conversation_id)
        .fetch_all(conn)
        .await?)
}

/// The organizer most recently assigned a conversation by any path, in feed order (the rotation's start).
pub async fn last_assigned(conn: &mut Conn, campaign_id: &str) -> AppResult<Option<String>> {
    let sql = format!("SELECT {}", super::feed::last_assigned("$1"));
    Ok(sqlx::query_scalar(&sql)
        .bind(campaign_id) // $1 campaign_id
        .fetch_one(conn)
        .await?)
}

/// The organizer most recently auto-assigned a conversation.
pub async fn last_auto_assigned(conn: &mut Conn, campaign_id: &str) -> AppResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT last_auto_assignee_id FROM inbox_settings WHERE campaign_id = $1",
    )
    .bind(campaign_id)
    .fetch_optional(conn)
    .await?
    .flatten())
}
