//! Conversations: upsert, read as one user sees them, lock for a change, and write a change with its
//! history event.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use super::Conn;
use super::rules::{
    group_grant_columns, leaves_queue, may_view, open_holder, record_load_changes, reply_due,
    stamp_after, unreachable_cause, viewer_row,
};
use crate::domain::access::GroupGrants;
use crate::domain::model::{
    AssignmentAction, AssignmentSource, Availability, Conversation, ConversationStatus, Role, User,
};
use crate::error::AppResult;

/// The stored columns of a conversation (`domain::model::Conversation`), of the row aliased `c`.
macro_rules! stored_columns {
    () => {
        "c.conversation_id, c.member_id, c.member_tags, c.status, c.assignee_id, c.assigned_at, \
         c.assigned_by, c.version, c.updated_at, c.awaiting_reply_since, c.lapsed_by"
    };
}

/// A conversation's columns, of the row aliased `c`, with when its reply is due (its campaign's settings
/// read by key).
pub(super) const COLUMNS: &str = concat!(
    stored_columns!(),
    ", (SELECT ",
    reply_due!(),
    " FROM inbox_settings s WHERE s.campaign_id = c.campaign_id) AS reply_due_at"
);

/// A conversation's columns without its due time (`reply_due_at` NULL), for the auto-assign batch, which
/// holds its campaign's settings and fills it in (`domain::replies::reply_due_at`) rather than read the
/// settings once per row of its hot statements.
pub(super) const COLUMNS_WITHOUT_DUE: &str =
    concat!(stored_columns!(), ", NULL::timestamptz AS reply_due_at");

/// A conversation with what one user's access groups grant on it.
#[derive(Debug, Clone)]
pub struct Viewed {
    pub conversation: Conversation,
    pub grants: GroupGrants,
}

/// A conversation locked `FOR UPDATE` for a change, with what the actor's groups grant on it.
#[derive(Debug, Clone)]
pub struct Locked {
    pub conversation: Conversation,
    pub actor_grants: GroupGrants,
    /// The actor already changed it in a call with this idempotency key (see [`lock_with_users`]).
    pub already_applied: bool,
}

/// What ListConversations narrows to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub assignee_id: Option<String>,
    pub unassigned: bool,
    pub status: Option<ConversationStatus>,
    /// Only open conversations whose holder cannot answer them (`store::rules::unreachable_cause`).
    pub held_by_unreachable: bool,
}

/// One change of assignee, with who made it, for the history event written beside it.
#[derive(Debug, Clone, Copy)]
pub struct AssigneeChange<'a> {
    pub campaign_id: &'a str,
    pub conversation_id: &'a str,
    pub action: AssignmentAction,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub actor_id: &'a str,
    pub source: AssignmentSource,
    pub request_id: Option<&'a str>,
}

/// Creates a conversation or updates its member data. Returns it and whether it was created.
pub async fn upsert(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: &str,
    member_id: &str,
    member_tags: &[String],
) -> AppResult<(Conversation, bool)> {
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
        .fetch_optional(&mut *conn)
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
                .fetch_one(conn)
                .await?;
            Ok((row, false))
        }
    }
}

/// A conversation with what `viewer_id`'s access groups grant on it.
pub async fn view(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: &str,
    viewer_id: &str,
) -> AppResult<Option<Viewed>> {
    let sql = format!(
        "SELECT {COLUMNS}, {} \
         FROM conversations c WHERE c.campaign_id = $1 AND c.conversation_id = $2",
        group_grant_columns("$3", "c"),
    );
    let row: Option<ViewedRow> = sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(conversation_id)
        .bind(viewer_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| Viewed {
        conversation: row.conversation,
        grants: GroupGrants {
            view: row.group_view,
            reply: row.group_reply,
        },
    }))
}

/// The conversation as it stands, whoever may see it (the caller decided that).
pub async fn find(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: &str,
) -> AppResult<Option<Conversation>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM conversations c WHERE c.campaign_id = $1 AND c.conversation_id = $2"
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(conversation_id)
        .fetch_optional(conn)
        .await?)
}

/// One page of conversations ordered by id. `visible_to` limits the page to what that user may view
/// ([`may_view`]: through a group, or because they hold it); `None` shows everything (admins).
pub async fn list(
    conn: &mut Conn,
    campaign_id: &str,
    visible_to: Option<&str>,
    filter: &Filter,
    after: Option<&str>,
    limit: i64,
) -> AppResult<Vec<Conversation>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM conversations c LEFT JOIN {} v ON true \
         WHERE c.campaign_id = $1 \
           AND ($2::text IS NULL OR {}) \
           AND ($3::text IS NULL OR c.assignee_id = $3) \
           AND (NOT $4 OR c.assignee_id IS NULL) \
           AND ($5::text IS NULL OR c.status = $5) \
           AND ($6::text IS NULL OR c.conversation_id > $6) \
           AND (NOT $8 OR (c.status = 'OPEN' AND EXISTS ( \
                 SELECT 1 FROM users h WHERE h.campaign_id = c.campaign_id AND h.user_id = c.assignee_id \
                    AND ({}) IS NOT NULL))) \
         ORDER BY c.conversation_id LIMIT $7",
        viewer_row("$1", "$2"),
        may_view("v", "c"),
        unreachable_cause("h", "c"),
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(visible_to)
        .bind(filter.assignee_id.as_deref())
        .bind(filter.unassigned)
        .bind(filter.status)
        .bind(after)
        .bind(limit)
        .bind(filter.held_by_unreachable)
        .fetch_all(conn)
        .await?)
}

/// A conversation locked for a change, with the users its decision reads.
#[derive(Debug, Clone)]
pub struct LockedWithUsers {
    /// `None` when the conversation does not exist.
    pub locked: Option<Locked>,
    /// Those of the users asked for that exist, share-locked.
    pub users: Vec<User>,
}

/// Locks a conversation for a change (`FOR UPDATE`: racing changes serialise here, and the second reads
/// the first one's result) with what `actor_id`'s groups grant on it, then takes `FOR SHARE` locks on
/// `user_ids` (the actor and whoever the change names), in one statement and in the lock order
/// (conversation, then users in byte order of id): a concurrent change of their role or active flag waits
/// for this transaction, and one that committed first is what this reads (a row lock reads the newest
/// version, even one committed while the statement waited for the conversation).
///
/// With an `idempotency_key` (the `x-request-id` a caller sent), it also says whether the actor already
/// changed this conversation in a call with that key: a history event with that request id and actor.
pub async fn lock_with_users(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: &str,
    actor_id: &str,
    user_ids: &[&str],
    idempotency_key: Option<&str>,
) -> AppResult<LockedWithUsers> {
    let rows: Vec<PgRow> = sqlx::query(&lock_with_users_sql())
        .bind(campaign_id) // $1
        .bind(conversation_id) // $2
        .bind(actor_id) // $3
        .bind(user_ids) // $4
        .bind(idempotency_key) // $5
        .fetch_all(conn)
        .await?;
    let mut locked = None;
    let mut users = Vec::with_capacity(rows.len());
    for row in rows {
        if locked.is_none()
            && row
                .try_get::<Option<String>, _>("conversation_id")?
                .is_some()
        {
            let viewed = ViewedRow::from_row(&row)?;
            locked = Some(Locked {
                conversation: viewed.conversation,
                actor_grants: GroupGrants {
                    view: viewed.group_view,
                    reply: viewed.group_reply,
                },
                already_applied: row.try_get("already_applied")?,
            });
        }
        if row.try_get::<Option<String>, _>("user_id")?.is_some() {
            users.push(LockedUser::from_row(&row)?.into());
        }
    }
    Ok(LockedWithUsers { locked, users })
}

/// [`lock_with_users`]'s statement: $1 campaign, $2 conversation, $3 actor, $4 the users to share-lock,
/// $5 the idempotency key (NULL: none).
/// Public so that the auto-assign benchmark runs the very same statement under pgbench.
#[doc(hidden)]
pub fn lock_with_users_sql() -> String {
    // The users' scan is gated on an InitPlan over the conversation's lock: it starts once that is had.
    format!(
        "WITH locked AS MATERIALIZED ( \
           SELECT {COLUMNS}, {}, \
                  ($5::text IS NOT NULL AND EXISTS ( \
                     SELECT 1 FROM assignment_events e \
                      WHERE e.campaign_id = c.campaign_id AND e.conversation_id = c.conversation_id \
                        AND e.request_id = $5 AND e.actor_id = $3)) AS already_applied \
             FROM conversations c WHERE c.campaign_id = $1 AND c.conversation_id = $2 \
              FOR UPDATE OF c \
         ), people AS MATERIALIZED ( \
           SELECT u.user_id, u.role, u.display_name, u.active, u.updated_at AS user_updated_at, \
                  u.availability, u.capacity \
             FROM users u WHERE u.campaign_id = $1 AND u.user_id = ANY($4) \
              AND (SELECT count(*) FROM locked) >= 0 \
            ORDER BY u.user_id COLLATE \"C\" FOR SHARE OF u \
         ) \
         SELECT l.*, p.* FROM (VALUES (1)) AS one(x) \
           LEFT JOIN locked l ON true LEFT JOIN people p ON true",
        group_grant_columns("$3", "c"),
    )
}

/// A user as [`lock_with_users`] returns them (`updated_at` is the conversation's there).
#[derive(sqlx::FromRow)]
struct LockedUser {
    user_id: String,
    role: Role,
    display_name: String,
    active: bool,
    user_updated_at: DateTime<Utc>,
    availability: Availability,
    capacity: Option<i32>,
}

impl From<LockedUser> for User {
    fn from(row: LockedUser) -> Self {
        User {
            user_id: row.user_id,
            role: row.role,
            display_name: row.display_name,
            active: row.active,
            updated_at: row.user_updated_at,
            availability: row.availability,
            capacity: row.capacity,
        }
    }
}

/// Sets the assignee of a locked conversation and records the history event, in one statement.
pub async fn set_assignee(conn: &mut Conn, change: AssigneeChange<'_>) -> AppResult<Conversation> {
    Ok(sqlx::query_as(&set_assignee_sql())
        .bind(change.campaign_id)
        .bind(change.conversation_id)
        .bind(change.to)
        .bind(change.actor_id)
        .bind(change.action)
        .bind(change.from)
        .bind(change.source)
        .bind(change.request_id)
        .fetch_one(conn)
        .await?)
}

/// [`set_assignee`]'s statement: $1 campaign, $2 conversation, $3 new assignee (NULL: none), $4 actor,
/// $5 action, $6 previous assignee, $7 source, $8 request id. Public so that the auto-assign benchmark runs
/// the very same statement under pgbench.
#[doc(hidden)]
pub fn set_assignee_sql() -> String {
    format!(
        "WITH updated AS ( \
           UPDATE conversations c \
              SET assignee_id = $3::text, \
                  assigned_at = CASE WHEN $3::text IS NULL THEN NULL ELSE now() END, \
                  assigned_by = CASE WHEN $3::text IS NULL THEN NULL ELSE $4::text END, \
                  version = c.version + 1, updated_at = now(), clock = {} \
            WHERE c.campaign_id = $1 AND c.conversation_id = $2 \
           RETURNING c.* \
         ), loads AS ({}), {} \
         SELECT {COLUMNS} FROM updated c",
        // Its events come after every earlier one about the conversation.
        stamp_after(&["c.clock"]),
        // The load moves from the previous assignee (read under the caller's lock) to the new one.
        record_load_changes(&format!(
            "SELECT campaign_id, {}, {} FROM updated",
            open_holder("status", "$6::text"),
            open_holder("status", "assignee_id")
        )),
        // An assigned conversation leaves the queue.
        leaves_queue(
            "updated",
            "$3::text IS NOT NULL",
            "SELECT campaign_id, conversation_id, $5, $6, $3::text, 1, clock FROM updated",
            "$4::text",
            "$7",
            "$8"
        ),
    )
}

/// Sets the status of a locked conversation to a different one and records a RESOLVE or REOPEN event; a
/// resolved conversation leaves the waiting queue. One statement.
pub async fn set_status(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: &str,
    status: ConversationStatus,
    actor_id: &str,
    request_id: Option<&str>,
) -> AppResult<Conversation> {
    let action = match status {
        ConversationStatus::Resolved => AssignmentAction::Resolve,
        ConversationStatus::Open => AssignmentAction::Reopen,
    };
    let sql = format!(
        "WITH updated AS ( \
           UPDATE conversations c SET status = $3, version = c.version + 1, updated_at = now(), \
                  clock = {}, awaiting_reply_since = CASE WHEN $3 = 'RESOLVED' THEN NULL ELSE c.awaiting_reply_since END, \
                  lapsed_by = CASE WHEN $3 = 'RESOLVED' THEN '{{}}' ELSE c.lapsed_by END \
            WHERE c.campaign_id = $1 AND c.conversation_id = $2 AND c.status <> $3 RETURNING c.* \
         ), loads AS ({}), {} \
         SELECT {COLUMNS} FROM updated c",
        stamp_after(&["c.clock"]),
        // The status changed (the update requires it): the holder's load loses a resolved conversation,
        // gains a reopened one.
        record_load_changes(&format!(
            "SELECT campaign_id, {}, {} FROM updated",
            open_holder(
                "CASE status WHEN 'OPEN' THEN 'RESOLVED' ELSE 'OPEN' END",
                "assignee_id"
            ),
            open_holder("status", "assignee_id")
        )),
        // A resolved conversation leaves the queue; the event names who holds it.
        leaves_queue(
            "updated",
            "$3 = 'RESOLVED'",
            "SELECT campaign_id, conversation_id, $4, assignee_id, assignee_id, 1, clock FROM updated",
            "$5",
            "'MANUAL'",
            "$6"
        ),
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(conversation_id)
        .bind(status)
        .bind(action)
        .bind(actor_id)
        .bind(request_id)
        .fetch_one(conn)
        .await?)
}

/// The ids of `ids` that are not conversations of the campaign, sorted.
pub async fn missing(conn: &mut Conn, campaign_id: &str, ids: &[String]) -> AppResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM unnest($2::text[]) AS id \
         WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.campaign_id = $1 AND c.conversation_id = id) \
         ORDER BY id",
    )
    .bind(campaign_id)
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

#[derive(sqlx::FromRow)]
struct Upserted {
    #[sqlx(flatten)]
    conversation: Conversation,
    created: bool,
}

#[derive(sqlx::FromRow)]
struct ViewedRow {
    #[sqlx(flatten)]
    conversation: Conversation,
    group_view: bool,
    group_reply: bool,
}
