//! Replies and silence timers: a reply's record (which ends the member's wait), and the timers that are
//! due, found and fired by any replica through the `conversations_reply_timers` index.

use chrono::{DateTime, Utc};

use super::conversations::COLUMNS;
use super::rules::{Event, reply_due, stamp_after};
use super::{Campaigns, Conn, by_key, by_row_id, next_due_of, row_by_key};
use crate::domain::model::Conversation;
use crate::domain::replies::{RecordedReply, Reply};
use crate::error::AppResult;

/// The first report of `message_id`, if any (read under the conversation's lock, so two reports of one
/// reply serialise and the second sees the first).
pub async fn recorded(
    conn: &mut Conn,
    campaign_id: &str,
    message_id: &str,
) -> AppResult<Option<RecordedReply>> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT conversation_id, sender_id FROM replies WHERE campaign_id = $1 AND message_id = $2",
    )
    .bind(campaign_id)
    .bind(message_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(conversation_id, sender_id)| RecordedReply {
        conversation_id,
        sender_id,
    }))
}

/// Records a reply to a locked conversation and ends its member's wait (and so its holder's timer): the
/// wait's start and who let it lapse are cleared. One statement. Returns the conversation as it is now.
pub async fn record(conn: &mut Conn, campaign_id: &str, reply: &Reply) -> AppResult<Conversation> {
    let sql = format!(
        "WITH recorded AS ( \
           INSERT INTO replies (campaign_id, message_id, conversation_id, sender_id) \
           VALUES ($1, $2, $3, $4) \
         ), answered AS ( \
           UPDATE conversations c SET awaiting_reply_since = NULL, lapsed_by = '{{}}' \
            WHERE c.campaign_id = $1 AND c.conversation_id = $3 RETURNING c.* \
         ) \
         SELECT {COLUMNS} FROM answered c"
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id) // $1
        .bind(&reply.message_id) // $2
        .bind(&reply.conversation_id) // $3
        .bind(&reply.sender_id) // $4
        .fetch_one(conn)
        .await?)
}

/// When each campaign's next silence timer is due (past or future; a campaign with none has no row), for
/// the campaigns named or, for an agenda's full read, every one with timers on. A hint for this replica's
/// agenda (`service::agenda`), read without a lock: each timer fires under its campaign's lock, after a
/// fresh read.
pub async fn next_due(
    conn: &mut Conn,
    campaigns: Campaigns<'_>,
) -> AppResult<Vec<(String, DateTime<Utc>)>> {
    let sql = next_due_sql(&campaigns.condition("s.campaign_id", 1));
    next_due_of(conn, &sql, campaigns).await
}

/// Each campaign's earliest timer, among the settings rows `campaigns` (an SQL condition on `s`) admits:
/// one step into the timers' index per campaign (its first entry).
fn next_due_sql(campaigns: &str) -> String {
    format!(
        "SELECT s.campaign_id, d.due_at FROM inbox_settings s \
          CROSS JOIN LATERAL ( \
            SELECT {due} AS due_at FROM conversations c \
             WHERE {pending} AND c.campaign_id = s.campaign_id \
             ORDER BY greatest(c.awaiting_reply_since, c.assigned_at) LIMIT 1) AS d \
          /* timers on, in the campaigns asked about */ \
          WHERE s.reply_within_seconds IS NOT NULL AND {campaigns}",
        due = reply_due!(),
        pending = PENDING,
    )
}

/// The predicate of `conversations_reply_timers` (the migration), on the conversation aliased `c`: only
/// these rows can have a timer, and the index holds just them.
const PENDING: &str = "c.awaiting_reply_since IS NOT NULL AND c.assignee_id IS NOT NULL AND c.status = 'OPEN' \
                       AND NOT (c.assignee_id = ANY (c.lapsed_by))";

/// One conversation whose timer fired: its holder let the wait lapse.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lapsed {
    pub conversation_id: String,
    pub holder_id: String,
    pub due_at: DateTime<Utc>,
    /// How many holders let this wait lapse before this one.
    pub lapses_before: i32,
}

/// Locks the campaign's `limit` most overdue conversations whose reply is due now, replies being due
/// `reply_within_seconds` (the campaign's setting, read by the caller with the campaign's auto-assign lock),
/// and returns them. They are chosen once in the timers' index order (materialized: a plan made on stale
/// statistics must not run the choice again per row), then each is reached by its key and locked, in byte
/// order of id (the order of every locker of several), through the primary key (`by_key`: the timers'
/// partial index would match the key's lookup too, and read the campaign's pending timers for each). A row
/// lock reads the newest version and the due test (NULL unless a timer runs) is evaluated on it again, so a reply (or any change) that committed meanwhile is seen: a
/// conversation answered in time never fires.
pub async fn lock_due(
    conn: &mut Conn,
    campaign_id: &str,
    reply_within_seconds: i32,
    limit: i64,
) -> AppResult<Vec<Lapsed>> {
    let sql = format!(
        "WITH due AS MATERIALIZED ( \
           SELECT c.conversation_id FROM conversations c \
            WHERE c.campaign_id = $1 AND {pending} \
              AND greatest(c.awaiting_reply_since, c.assigned_at) <= now() - make_interval(secs => $2) \
            ORDER BY greatest(c.awaiting_reply_since, c.assigned_at) LIMIT $3 \
         ) \
         SELECT c.conversation_id, c.assignee_id AS holder_id, c.due_at, \
                cardinality(c.lapsed_by) AS lapses_before \
           FROM (SELECT conversation_id FROM due ORDER BY conversation_id COLLATE \"C\") AS d \
          CROSS JOIN LATERAL ( \
            SELECT c.*, {due} AS due_at \
              FROM conversations c, (SELECT $2::integer AS reply_within_seconds) AS s \
             WHERE c.campaign_id = $1 AND {due} <= now() AND {by_key} \
               FOR UPDATE OF c) AS c",
        due = reply_due!(),
        pending = PENDING,
        by_key = by_key("c", "d.conversation_id"),
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id) // $1
        .bind(reply_within_seconds) // $2
        .bind(limit) // $3
        .fetch_all(conn)
        .await?)
}

/// Under NOTIFY: the lapsed conversations, locked by [`lock_due`], stay with their holders, who are
/// recorded in `lapsed_by` (so each holder's timer fires once per wait), with a REPLY_OVERDUE event each.
pub async fn flag_overdue(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_ids: &[&str],
) -> AppResult<()> {
    let events = Event {
        conversation_id: "f.conversation_id",
        from_user_id: "f.assignee_id",
        cause: "'REPLY_OVERDUE'",
        stamp: "f.stamp",
        ..Event::of("$1", "'REPLY_OVERDUE'", "NULL", "'AUTO'", "NULL")
    }
    .insert("FROM flagged f ORDER BY f.conversation_id");
    let sql = format!(
        "WITH flagged AS ( \
           UPDATE conversations c SET lapsed_by = array_append(c.lapsed_by, c.assignee_id), clock = {stamp} \
             FROM unnest($2::text[]) AS k(conversation_id) \
            {found} \
            WHERE {by_row_id} AND c.assignee_id IS NOT NULL \
           RETURNING c.conversation_id, c.assignee_id, c.clock AS stamp \
         ) {events}",
        // After every earlier event about the conversation.
        stamp = stamp_after(&["c.clock"]),
        // Each found by its key and changed by row id: with `= ANY($2)`, a plan kept from a table of many
        // small campaigns may read the whole campaign.
        found = row_by_key("conversations", "f", "$1", "k.conversation_id", "", "x"),
        by_row_id = by_row_id("c", "$1", "x.row_id"),
    );
    sqlx::query(&sql)
        .bind(campaign_id)
        .bind(conversation_ids)
        .execute(conn)
        .await?;
    Ok(())
}
