//! The feed's order: a sequencer numbers each campaign's committed events under the campaign's feed head,
//! and readers page by those numbers. See the migration `..._feed.sql` for why it cannot skip.

use super::rules::may_view;
use super::{Conn, by_row_id};
use crate::domain::model::{AssignmentEvent, User};
use crate::error::AppResult;

/// The order the sequencer numbers a campaign's committed events in (ascending; the rotation reads it
/// descending): by stamp, a clock of the campaign's own rows (`rules::Event::stamp`), so a writer that
/// waited for another's row lock comes after it; then by event id, which only orders events of one
/// statement, or of writers that share no row and so may come in either order.
const FEED_ORDER: [&str; 2] = ["stamp", "event_id"];

/// [`FEED_ORDER`] as an ORDER BY list over the events aliased `alias` (empty: unqualified), descending if
/// `descending`.
fn feed_order(alias: &str, descending: bool) -> String {
    let prefix = if alias.is_empty() {
        String::new()
    } else {
        format!("{alias}.")
    };
    let direction = if descending { " DESC" } else { "" };
    FEED_ORDER
        .iter()
        .map(|column| format!("{prefix}{column}{direction}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Events one sequencer run numbers at most; the rest wait for the next run.
pub const SEQUENCE_LIMIT: u64 = 1000;

pub(super) const EVENT_COLUMNS: &str = "e.conversation_id, e.action, e.from_user_id, e.to_user_id, \
     e.actor_id, e.source, e.occurred_at, e.request_id, e.user_id, e.availability, e.cause, e.seq, \
     e.priority";

/// Numbers the campaign's committed, unnumbered events after its head, in feed order, and moves the
/// head; returns the new head and how many were numbered. Run in a transaction of its own
/// (`Store::begin_keyed`): the head row stays locked until it commits, so numbers are dense and visible in
/// order.
pub async fn sequence(conn: &mut Conn, campaign_id: &str) -> AppResult<(i64, u64)> {
    // Locks the head (making it on first use); the numbering is a statement of its own, begun after the
    // lock was had, so it sees everything committed before.
    let head: i64 = sqlx::query_scalar(
        "INSERT INTO feed_heads AS f (campaign_id) VALUES ($1) \
         ON CONFLICT (campaign_id) DO UPDATE SET last_seq = f.last_seq RETURNING last_seq",
    )
    .bind(campaign_id)
    .fetch_one(&mut *conn)
    .await?;
    let numbered = number_locked(conn, &[campaign_id]).await?;
    Ok(numbered
        .into_iter()
        .next()
        .map_or((head, 0), |n| (n.head, n.numbered)))
}

/// A campaign's events numbered by [`number_locked`].
#[derive(Debug, Clone)]
pub struct Numbered {
    pub campaign_id: String,
    /// The head after numbering.
    pub head: i64,
    pub numbered: u64,
}

/// Numbers the unnumbered events of campaigns whose feed heads the transaction holds locked, up to
/// `SEQUENCE_LIMIT` each in [`FEED_ORDER`], and moves their heads; returns the campaigns it numbered events
/// of. The heads stay locked until the transaction commits, so numbers are dense and visible in order; run
/// it as a statement begun after the locks were had, so it sees everything committed before. Rows are found
/// by key per campaign and changed by row id, so a kept plan (see `Store::begin_keyed`) stays bounded. An
/// auto-assign batch numbers its campaigns' events itself (`auto_assign::read_batch`, `write_batch`).
async fn number_locked(conn: &mut Conn, campaign_ids: &[&str]) -> AppResult<Vec<Numbered>> {
    let sql = format!(
        "WITH {}, numbered AS ( \
           UPDATE assignment_events e SET seq = b.seq FROM backlog b WHERE {by_row_id} \
           RETURNING e.campaign_id \
         ), counts AS MATERIALIZED ( \
           SELECT campaign_id, count(*) AS numbered FROM numbered GROUP BY campaign_id \
         ), moved AS ( \
           UPDATE feed_heads f SET last_seq = h.head + c.numbered \
             FROM counts c JOIN heads h ON h.campaign_id = c.campaign_id \
            WHERE f.campaign_id = ANY($1) AND f.campaign_id = c.campaign_id \
         ) \
         SELECT c.campaign_id, h.head + c.numbered AS head, c.numbered \
           FROM counts c JOIN heads h ON h.campaign_id = c.campaign_id",
        backlog_ctes("$1", "$2"),
        by_row_id = by_row_id("e", "b.campaign_id", "b.row_id"),
    );
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(&sql)
        .bind(campaign_ids)
        .bind(SEQUENCE_LIMIT as i64)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(campaign_id, head, numbered)| Numbered {
            campaign_id,
            head,
            numbered: u64::try_from(numbered).unwrap_or(0),
        })
        .collect())
}

/// The CTEs `heads` (`campaign_id`, `head`: each locked head's number) and `backlog` (`campaign_id`, `seq`,
/// `row_id`: the campaigns' committed, unnumbered events, at most `limit` each, numbered after the head in
/// [`FEED_ORDER`]), for the campaigns of the text array parameter `campaigns`. Events are found through the
/// index of unnumbered events and changed by row id, so a kept plan stays bounded.
pub(super) fn backlog_ctes(campaigns: &str, limit: &str) -> String {
    let order = feed_order("", false);
    format!(
        "heads AS MATERIALIZED ( \
           SELECT k.campaign_id, f.last_seq AS head FROM unnest({campaigns}::text[]) AS k(campaign_id) \
           CROSS JOIN LATERAL (SELECT last_seq FROM feed_heads WHERE campaign_id = k.campaign_id) AS f \
         ), backlog AS MATERIALIZED ( \
           SELECT h.campaign_id, h.head + x.n AS seq, x.row_id FROM heads h \
           CROSS JOIN LATERAL ( \
             SELECT ctid AS row_id, row_number() OVER (ORDER BY {order}) AS n FROM ( \
               SELECT ctid, stamp, event_id FROM assignment_events \
                WHERE campaign_id = h.campaign_id AND seq IS NULL ORDER BY {order} LIMIT {limit}) AS u) AS x \
         )"
    )
}

/// The organizer assigned last (ASSIGN or REASSIGN, by any path) in the feed order of the campaign given by
/// the SQL expression `campaign`: events not numbered yet come after the numbered ones, in [`FEED_ORDER`],
/// the order they will be numbered in. Only organizers count. An auto-assign batch reads it after numbering
/// nothing yet, in the statement that numbers what it saw, so "last" is last in the feed its replay reads.
pub(super) fn last_assigned(campaign: &str) -> String {
    let organizer = "(SELECT a.role FROM users a \
                      WHERE a.campaign_id = e.campaign_id AND a.user_id = e.to_user_id) = 'ORGANIZER'";
    let newest_first = feed_order("e", true);
    format!(
        "coalesce( \
           (SELECT e.to_user_id FROM assignment_events e \
             WHERE e.campaign_id = {campaign} AND e.seq IS NULL AND e.action IN ('ASSIGN', 'REASSIGN') \
               AND {organizer} ORDER BY {newest_first} LIMIT 1), \
           (SELECT e.to_user_id FROM assignment_events e \
             WHERE e.campaign_id = {campaign} AND e.seq IS NOT NULL AND e.action IN ('ASSIGN', 'REASSIGN') \
               AND {organizer} ORDER BY e.seq DESC LIMIT 1))"
    )
}

/// The campaign's head: the number of its newest numbered event (0 before any).
pub async fn head(conn: &mut Conn, campaign_id: &str) -> AppResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT last_seq FROM feed_heads WHERE campaign_id = $1")
            .bind(campaign_id)
            .fetch_optional(conn)
            .await?
            .unwrap_or(0),
    )
}

/// When the campaign's event numbered `seq` occurred (None: not numbered yet).
pub async fn occurred_at(
    conn: &mut Conn,
    campaign_id: &str,
    seq: i64,
) -> AppResult<Option<chrono::DateTime<chrono::Utc>>> {
    Ok(sqlx::query_scalar(
        "SELECT occurred_at FROM assignment_events WHERE campaign_id = $1 AND seq = $2",
    )
    .bind(campaign_id)
    .bind(seq)
    .fetch_optional(conn)
    .await?)
}

/// What a watcher asked to see.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only these conversations (empty: all).
    pub conversation_ids: Vec<String>,
    /// Only changes to or from this user.
    pub assignee_id: Option<String>,
}

/// Numbered events after `after`, in feed order, at most `limit`.
pub async fn after(
    conn: &mut Conn,
    campaign_id: &str,
    after: i64,
    filter: &EventFilter,
    limit: i64,
) -> AppResult<Vec<AssignmentEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM assignment_events e \
         WHERE e.campaign_id = $1 AND e.seq > $2 \
           AND (cardinality($3::text[]) = 0 OR e.conversation_id = ANY($3)) \
           AND ($4::text IS NULL OR e.from_user_id = $4 OR e.to_user_id = $4 OR e.user_id = $4) \
         ORDER BY e.seq LIMIT $5"
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(after)
        .bind(&filter.conversation_ids)
        .bind(filter.assignee_id.as_deref())
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// A watching user as the directory knows them now, and which of a batch's conversations they may view
/// (`may_view`: an active admin all of them; an active organizer those a group lets them view or they hold).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WatcherAccess {
    #[sqlx(flatten)]
    pub user: User,
    pub viewable: Vec<String>,
}

/// What each of `user_ids` (those that exist) may see of a batch of `conversation_ids`: one read for every
/// watcher of the campaign, however many there are.
pub async fn watcher_access(
    conn: &mut Conn,
    campaign_id: &str,
    user_ids: &[&str],
    conversation_ids: &[&str],
) -> AppResult<Vec<WatcherAccess>> {
    let sql = format!(
        "SELECT u.user_id, u.role, u.display_name, u.active, u.updated_at, u.availability, u.capacity, \
                ARRAY(SELECT c.conversation_id FROM conversations c \
                       WHERE c.campaign_id = $1 AND c.conversation_id = ANY($3) AND {}) AS viewable \
         FROM users u WHERE u.campaign_id = $1 AND u.user_id = ANY($2)",
        may_view("u", "c")
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(user_ids)
        .bind(conversation_ids)
        .fetch_all(conn)
        .await?)
}

/// Campaigns with events not numbered yet (a replica died between a commit and its sequencer).
pub async fn unsequenced_campaigns(conn: &mut Conn) -> AppResult<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT campaign_id FROM assignment_events WHERE seq IS NULL")
            .fetch_all(conn)
            .await?,
    )
}
