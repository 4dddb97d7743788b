//! The waiting queue of auto-assignment: conversations nobody could take yet, in the order they drain.
//! Batches add and drain under the campaign's auto-assign lock (`store::auto_assign`); these are the reads.

use std::collections::HashMap;

use super::conversations::COLUMNS;
use super::rules::{
    Event, campaign_event_clock, front_of_queue_key, may_view, open_holder, queue_arrivals,
    record_load_changes, stamp_after, viewer_row,
};
use super::{Conn, by_row_id, row_by_key};
use crate::domain::auto_assign::WaitingConversation;
use crate::error::AppResult;

/// One page of the waiting queue in queue order, after queue key `after`; `visible_to` limits it to what
/// that user may view ([`may_view`]: through a group, or because they hold it), `None` shows everything. Ranks
/// count only what is shown: an organizer's rank 1 is the first waiting conversation they may view.
pub async fn list(
    conn: &mut Conn,
    campaign_id: &str,
    visible_to: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> AppResult<Vec<WaitingConversation>> {
    // Ranked after the visibility filter, in queue order; rows are pulled in that order and only up to the
    // page's end, so a page costs what the conversations up to it cost.
    let sql = format!(
        "WITH ranked AS ( \
           SELECT {COLUMNS}, row_number() OVER (ORDER BY w.position) AS rank, w.position, w.waiting_since, \
                  w.priority \
             FROM waiting_conversations w \
             JOIN conversations c ON c.campaign_id = $1 AND c.conversation_id = w.conversation_id \
             LEFT JOIN {} v ON true \
            WHERE w.campaign_id = $1 AND ($2::text IS NULL OR {}) \
         ) \
         SELECT * FROM ranked WHERE ($3::bigint IS NULL OR position > $3) ORDER BY position LIMIT $4",
        viewer_row("$1", "$2"),
        may_view("v", "c"),
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(visible_to)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// Campaigns with auto-assignment on whose queue may hold conversations, for the safety sweep.
pub async fn campaigns(conn: &mut Conn) -> AppResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT campaign_id FROM inbox_settings WHERE has_waiting AND auto_assign_enabled",
    )
    .fetch_all(conn)
    .await?)
}

/// How many conversations wait, and for how long the oldest has (seconds), across all campaigns.
pub async fn totals(conn: &mut Conn) -> AppResult<(i64, f64)> {
    Ok(sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(waiting_since))::float8, 0) \
         FROM waiting_conversations",
    )
    .fetch_one(conn)
    .await?)
}

/// Whether the campaign may have waiting conversations (no lock: a hint for pokes).
pub async fn may_have_waiting(conn: &mut Conn, campaign_id: &str) -> AppResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT has_waiting AND auto_assign_enabled FROM inbox_settings WHERE campaign_id = $1",
    )
    .bind(campaign_id)
    .fetch_optional(conn)
    .await?
    .unwrap_or(false))
}

/// The queue positions (1 = next) of these conversations, for those still waiting: how many entries of the
/// campaign's queue come at or before each. One unordered read of the queue's front (up to the last of them),
/// however many are asked about: each entry is counted in the bucket between the keys asked about it falls
/// in, and a conversation's place sums the buckets up to its own. A count per conversation read the front
/// once for each (at 50,000 waiting, under a batch's settings: 32 positions took 650–750 ms, now 35–42 ms;
/// a single position 27 ms, now 40 ms). Each conversation asked about is reached by its key, so a plan kept
/// from a small table never reads the campaign's queue to find them.
pub async fn positions(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_ids: &[&str],
) -> AppResult<HashMap<String, i64>> {
    let sql = format!(
        "WITH asked AS MATERIALIZED ( \
           /* those asked about, still waiting, each by its key */ \
           SELECT x.conversation_id, q.position FROM unnest($2::text[]) AS x(conversation_id) \
           {waiting} \
         ), keys AS MATERIALIZED ( \
           SELECT array_agg(position ORDER BY position) AS sorted FROM asked \
         ), buckets AS MATERIALIZED ( \
           /* per entry, how many keys asked about lie before it */ \
           SELECT width_bucket(w.position - 1, k.sorted) AS keys_before, count(*) AS entries \
             FROM waiting_conversations w CROSS JOIN keys k \
            /* the campaign's queue up to the last key asked about */ \
            WHERE w.campaign_id = $1 AND w.position <= k.sorted[cardinality(k.sorted)] \
            GROUP BY 1 \
         ) \
         SELECT a.conversation_id, \
                /* the entries before no later key than its own */ \
                (SELECT sum(b.entries) FROM buckets b \
                  WHERE b.keys_before < array_position(k.sorted, a.position))::bigint \
           FROM asked a CROSS JOIN keys k",
        waiting = row_by_key(
            "waiting_conversations",
            "w",
            "$1",
            "x.conversation_id",
            ", w.position",
            "q"
        ),
    );
    let rows: Vec<(String, i64)> = sqlx::query_as(&sql)
        .bind(campaign_id) // $1
        .bind(conversation_ids) // $2
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Locks `user_id`'s open conversations (in byte order of id, as every locker of several does), before the
/// user's own row is locked: changes of one conversation lock it before its users, so this order never
/// waits on them in a cycle. Returns their ids, for [`requeue`].
pub async fn lock_returnable(
    conn: &mut Conn,
    campaign_id: &str,
    user_id: &str,
) -> AppResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT conversation_id FROM conversations \
          WHERE campaign_id = $1 AND assignee_id = $2 AND status = 'OPEN' \
          ORDER BY conversation_id COLLATE \"C\" FOR UPDATE",
    )
    .bind(campaign_id)
    .bind(user_id)
    .fetch_all(conn)
    .await?)
}

/// Held conversations going back to the front of the queue, for one reason.
#[derive(Debug, Clone, Copy)]
pub struct Requeue<'a> {
    /// The conversations, locked by the caller (who also holds the campaign's auto-assign lock).
    pub conversation_ids: &'a [&'a str],
    /// Why, on their UNASSIGN and QUEUED events (`RETURNED_TO_QUEUE`, `REPLY_OVERDUE`, ...).
    pub cause: &'a str,
    /// The holder let the current wait for a reply lapse: routing does not give it back to them.
    pub record_lapse: bool,
    /// The wait for a reply is no longer timed.
    pub stop_timing: bool,
    pub actor_id: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// Puts held conversations back, in one statement: unassigned (an `auto` UNASSIGN from the holder, then a
/// QUEUED, both with the cause) and at the front of the queue; the campaign's waiting flag is set. Each
/// conversation's events are inserted in one ordered INSERT, so their ids (and so the feed) say UNASSIGN,
/// then QUEUED: separate inserts in one statement run in no order PostgreSQL promises. Those no longer held
/// are left alone. Returns the ids returned. The caller holds the campaign's auto-assign lock (which makes
/// its settings row, where the queue clock is, on first use) and the conversations' row locks.
pub async fn requeue(
    conn: &mut Conn,
    campaign_id: &str,
    requeue: Requeue<'_>,
) -> AppResult<Vec<String>> {
    // Each conversation's UNASSIGN (step 0), then its QUEUED (step 1) if it was not waiting already.
    let events = Event {
        conversation_id: "e.conversation_id",
        from_user_id: "e.from_user_id",
        cause: "$3",
        stamp: "e.stamp",
        ..Event::of("$1", "e.action", "$4", "'AUTO'", "$5")
    }
    .insert(
        "FROM (SELECT conversation_id, 'UNASSIGN' AS action, holder_id AS from_user_id, 0 AS step, stamp \
                 FROM returned \
               UNION ALL \
               SELECT conversation_id, 'QUEUED', NULL, 1, (SELECT stamp FROM stamp) FROM queued) AS e \
         ORDER BY e.conversation_id, e.step",
    );
    let sql = format!(
        "WITH held AS MATERIALIZED ( \
           SELECT c.row_id, c.conversation_id, c.assignee_id, {stamp} AS stamp \
             FROM unnest($2::text[]) AS k(conversation_id) \
            {held_by_key} \
             LEFT JOIN users u ON u.campaign_id = c.campaign_id AND u.user_id = c.assignee_id \
            WHERE c.assignee_id IS NOT NULL \
         ), stamp AS MATERIALIZED (SELECT max(stamp) AS stamp FROM held), returned AS ( \
           UPDATE conversations c SET assignee_id = NULL, assigned_at = NULL, assigned_by = NULL, \
                  lapsed_by = CASE WHEN $6 THEN array_append(c.lapsed_by, held.assignee_id) \
                                   ELSE c.lapsed_by END, \
                  awaiting_reply_since = CASE WHEN $7 THEN NULL ELSE c.awaiting_reply_since END, \
                  version = c.version + 1, updated_at = now(), clock = (SELECT stamp FROM stamp) \
             FROM held WHERE {held_by_row_id} \
           RETURNING c.conversation_id, held.assignee_id AS holder_id, c.status, c.clock AS stamp \
         ), loads AS ({loads}), flagged AS ({arrivals}), queued AS ( \
           INSERT INTO waiting_conversations (campaign_id, conversation_id, position) \
           SELECT $1, r.conversation_id, {front} \
             FROM (SELECT conversation_id, \
                          f.first_arrival + row_number() OVER (ORDER BY conversation_id DESC) - 1 AS arrival \
                     FROM returned CROSS JOIN flagged f) AS r \
           ON CONFLICT (campaign_id, conversation_id) DO NOTHING \
           RETURNING conversation_id \
         ), events AS ({events}) \
         SELECT conversation_id FROM returned ORDER BY conversation_id",
        // The statement's events come after every earlier one about its conversations, about their holders
        // (whose change of availability or shift may be what returns them, earlier in this transaction) and
        // about the queue: one stamp for them all, the greatest of `held`'s, so no event needs another's row
        // to find its own. Each row is found by its key (`= ANY($2)` lets a plan kept from a table of many
        // small campaigns read the whole campaign) and, locked by the caller, changed by row id: joined by
        // key, a plan took each held row against every conversation of the campaign.
        stamp = stamp_after(&["c.clock", "u.clock", &campaign_event_clock("$1")]),
        held_by_key = row_by_key(
            "conversations",
            "c",
            "$1",
            "k.conversation_id",
            ", c.campaign_id, c.conversation_id, c.assignee_id, c.clock",
            "c"
        ),
        held_by_row_id = by_row_id("c", "$1", "held.row_id"),
        // The returned take the front in reverse id order: the smallest id ends up first.
        arrivals = queue_arrivals("$1", "returned"),
        front = front_of_queue_key("r.arrival"),
        // The holders' loads lose the conversations returned.
        loads = record_load_changes(&format!(
            "SELECT $1::text, {}, NULL::text FROM returned",
            open_holder("status", "holder_id")
        )),
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(campaign_id) // $1
        .bind(requeue.conversation_ids) // $2
        .bind(requeue.cause) // $3
        .bind(requeue.actor_id) // $4
        .bind(requeue.request_id) // $5
        .bind(requeue.record_lapse) // $6
        .bind(requeue.stop_timing) // $7
        .fetch_all(conn)
        .await?)
}

/// A released conversation (unassigned from `holder` by the same transaction's previous statement) waits
/// at the front of the queue, if it is open: QUEUED (cause RELEASED, by the actor), and the campaign's
/// waiting flag set. The holder joins its `lapsed_by`: routing does not hand it straight back to them
/// before it is answered. The caller holds the campaign's auto-assign lock and the conversation's row lock.
pub async fn release(
    conn: &mut Conn,
    campaign_id: &str,
    conversation_id: &str,
    holder: &str,
    actor_id: &str,
    request_id: Option<&str>,
) -> AppResult<()> {
    let events = Event {
        conversation_id: "q.conversation_id",
        cause: "'RELEASED'",
        stamp: "(SELECT stamp FROM released)",
        ..Event::of("$1", "'QUEUED'", "$3", "'MANUAL'", "$4")
    }
    .insert("FROM queued q");
    let sql = format!(
        "WITH released AS ( \
           UPDATE conversations c SET lapsed_by = array_append(c.lapsed_by, $5), clock = {stamp} \
            WHERE c.campaign_id = $1 AND c.conversation_id = $2 AND c.status = 'OPEN' \
              AND c.assignee_id IS NULL \
           RETURNING c.campaign_id, c.conversation_id, c.clock AS stamp \
         ), flagged AS ({arrivals}), queued AS ( \
           INSERT INTO waiting_conversations (campaign_id, conversation_id, position) \
           SELECT r.campaign_id, r.conversation_id, {front} \
             FROM (SELECT campaign_id, conversation_id, f.first_arrival AS arrival \
                     FROM released CROSS JOIN flagged f) AS r \
           ON CONFLICT (campaign_id, conversation_id) DO NOTHING \
           RETURNING conversation_id \
         ) \
         {events}",
        // After the unassignment this transaction recorded, and every earlier event about the queue.
        stamp = stamp_after(&["c.clock", &campaign_event_clock("$1")]),
        arrivals = queue_arrivals("$1", "released"),
        front = front_of_queue_key("r.arrival"),
    );
    sqlx::query(&sql)
        .bind(campaign_id) // $1
        .bind(conversation_id) // $2
        .bind(actor_id) // $3
        .bind(request_id) // $4
        .bind(holder) // $5
        .execute(conn)
        .await?;
    Ok(())
}
