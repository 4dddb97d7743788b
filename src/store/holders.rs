//! Conversations held by someone who cannot answer them (`store::rules::unreachable_cause`).

use super::Conn;
use super::rules::unreachable_cause;
use crate::domain::model::Availability;
use crate::error::AppResult;

/// Which held conversations to look at.
#[derive(Debug, Clone, Copy)]
pub enum Held<'a> {
    /// Those held by these users.
    By(&'a [&'a str]),
    /// This one.
    Conversation(&'a str),
}

/// One conversation whose holder cannot answer it, and why (`domain::holders::Unreachable::cause`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnreachableHeld {
    pub conversation_id: String,
    pub holder_id: String,
    pub cause: String,
}

/// Locks the open conversations of `held` whose holder cannot answer them now, in byte order of id (the
/// order of every locker of several), and says why. Read in the caller's transaction after its change (a
/// deactivation, an access group's change), so the rule sees that change.
pub async fn lock_unreachable(
    conn: &mut Conn,
    campaign_id: &str,
    held: Held<'_>,
) -> AppResult<Vec<UnreachableHeld>> {
    // One statement per kind of `held` (no `$n IS NULL OR …`): a generic plan of such a filter could use
    // neither index and read the whole campaign for one conversation.
    let which = match held {
        Held::By(_) => "c.assignee_id = ANY($2::text[])",
        Held::Conversation(_) => "c.conversation_id = $2::text",
    };
    let sql = format!(
        "SELECT c.conversation_id, c.assignee_id AS holder_id, x.cause \
           FROM conversations c \
           JOIN users u ON u.campaign_id = c.campaign_id AND u.user_id = c.assignee_id \
          CROSS JOIN LATERAL (SELECT {cause} AS cause) AS x \
          WHERE c.campaign_id = $1 AND {which} AND c.status = 'OPEN' AND x.cause IS NOT NULL \
          ORDER BY c.conversation_id COLLATE \"C\" FOR UPDATE OF c",
        cause = unreachable_cause("u", "c"),
    );
    let query = sqlx::query_as(&sql).bind(campaign_id); // $1
    let query = match held {
        Held::By(users) => query.bind(users),     // $2 holders
        Held::Conversation(id) => query.bind(id), // $2 conversation
    };
    Ok(query.fetch_all(conn).await?)
}

/// The organizer holding an open conversation, the conversation locked (`FOR UPDATE`) and then their row
/// share-locked (the lock order: conversation, then users): who holds it and whether they are available.
/// `None` when it is resolved, nobody holds it, or an admin does (going away returns only organizers'
/// conversations).
pub async fn lock_holder(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: &str,
) -> AppResult<Option<(String, Availability)>> {
    let holder: Option<String> = sqlx::query_scalar(
        "SELECT assignee_id FROM conversations \
          WHERE campaign_id = $1 AND conversation_id = $2 AND status = 'OPEN' AND assignee_id IS NOT NULL \
            FOR UPDATE",
    )
    .bind(campaign_id)
    .bind(conversation_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(holder) = holder else {
        return Ok(None);
    };
    let availability: Option<Availability> = sqlx::query_scalar(
        "SELECT availability FROM users WHERE campaign_id = $1 AND user_id = $2 AND role = 'ORGANIZER' \
            FOR SHARE",
    )
    .bind(campaign_id)
    .bind(&holder)
    .fetch_optional(conn)
    .await?;
    Ok(availability.map(|a| (holder, a)))
}
