//! Conversations held by someone who cannot answer them (`store::rules::unreachable_cause`).

use super::Conn;
use super::rules::unreachable_cause;
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
    let (holders, conversation) = match held {
        Held::By(users) => (Some(users), None),
        Held::Conversation(id) => (None, Some(id)),
    };
    let sql = format!(
        "SELECT c.conversation_id, c.assignee_id AS holder_id, x.cause \
           FROM conversations c \
           JOIN users u ON u.campaign_id = c.campaign_id AND u.user_id = c.assignee_id \
          CROSS JOIN LATERAL (SELECT {cause} AS cause) AS x \
          WHERE c.campaign_id = $1 AND c.status = 'OPEN' \
            AND ($2::text[] IS NULL OR c.assignee_id = ANY($2)) \
            AND ($3::text IS NULL OR c.conversation_id = $3) \
            AND x.cause IS NOT NULL \
          ORDER BY c.conversation_id COLLATE \"C\" FOR UPDATE OF c",
        cause = unreachable_cause("u", "c"),
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id) // $1
        .bind(holders) // $2 holders, or NULL
        .bind(conversation) // $3 conversation, or NULL
        .fetch_all(conn)
        .await?)
}
