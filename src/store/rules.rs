//! The service's rules where SQL must apply them, each spelled once, as fragments the queries splice in.
//! Each fragment is the SQL form of a rule decided in `domain`; `tests/integration/store_rules.rs` checks
//! them against the Rust rules case by case.
//!
//! A fragment names the relations it reads by alias: the caller passes the aliases (and bind parameters) of
//! its statement, so a fragment never assumes a query's shape.

use super::{by_row_id, row_by_key};

/// `EXISTS (…)`: an access group that grants `permission` (`can_view` or `can_reply`) on the conversation
/// aliased `conv` has the user `user` (an expression: a bind parameter or a column) as a member.
pub(crate) fn group_grants(user: &str, permission: &str, conv: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM access_group_organizers m \
           JOIN access_groups g ON g.campaign_id = m.campaign_id AND g.access_group_id = m.access_group_id \
          WHERE m.campaign_id = {conv}.campaign_id AND m.user_id = {user} AND g.{permission} AND {})",
        scope_covers("g", conv)
    )
}

/// [`group_grants`] on the conversation aliased `c`.
pub(crate) fn grant_exists(user: &str, permission: &str) -> String {
    group_grants(user, permission, "c")
}

/// Whether the scope of access group `group` covers conversation `conv`: all conversations, a shared member
/// tag, or an explicit listing.
pub(crate) fn scope_covers(group: &str, conv: &str) -> String {
    format!(
        "({group}.scope_all OR {group}.scope_tags && {conv}.member_tags \
          OR EXISTS (SELECT 1 FROM access_group_conversations x \
                      WHERE x.campaign_id = {group}.campaign_id AND x.access_group_id = {group}.access_group_id \
                        AND x.conversation_id = {conv}.conversation_id))"
    )
}

/// The columns `group_view, group_reply`: what `user`'s access groups grant on the conversation aliased
/// `conv` (`domain::access::GroupGrants`), for the Rust rules to decide with (`may_view`, replying).
pub(crate) fn group_grant_columns(user: &str, conv: &str) -> String {
    format!(
        "{} AS group_view, {} AS group_reply",
        group_grants(user, "can_view", conv),
        group_grants(user, "can_reply", conv)
    )
}

/// Whether the user row aliased `viewer` (a `users` row: `user_id`, `role`, `active`; all NULL when there is
/// no such user, which sees nothing) may see the conversation aliased `conv`. The SQL form of
/// `domain::access::may_view`, in its words: an active admin sees every conversation; an active organizer
/// sees the conversations an access group lets them view, and the ones assigned to them. A group that
/// grants reply but not view shows nothing.
pub(crate) fn may_view(viewer: &str, conv: &str) -> String {
    format!(
        "coalesce({viewer}.active AND ({viewer}.role = 'ADMIN' OR {conv}.assignee_id = {viewer}.user_id \
                   OR {}), false)",
        group_grants(&format!("{viewer}.user_id"), "can_view", conv)
    )
}

/// The user `user` (a bind parameter) of the conversation aliased `conv`'s campaign, as a relation of at
/// most one row to join as [`may_view`]'s `viewer`: `LEFT JOIN {viewer_row(..)} v ON true`.
pub(crate) fn viewer_row(campaign: &str, user: &str) -> String {
    format!(
        "(SELECT user_id, role, active FROM users WHERE campaign_id = {campaign} AND user_id = {user})"
    )
}

/// Whether auto-assignment may give the conversation aliased `conv` to the user row aliased `user` (a
/// `users` row: `user_id`, `role`, `active`, `availability`), capacity aside: an active organizer,
/// AVAILABLE, whom an access group lets reply to it. The SQL form of `domain::auto_assign::Candidate::reasons`
/// being empty but for `AtCapacity` (loads are counted apart: `organizer_loads`).
pub(crate) fn eligible(user: &str, conv: &str) -> String {
    format!(
        "({user}.role = 'ORGANIZER' AND {user}.active AND {user}.availability = 'AVAILABLE' AND {})",
        may_reply(&format!("{user}.user_id"), conv)
    )
}

/// Whether an access group lets `user` (an expression) reply to the conversation aliased `conv`: the
/// `may_reply` of the preview's candidates, the group part of [`eligible`].
pub(crate) fn may_reply(user: &str, conv: &str) -> String {
    group_grants(user, "can_reply", conv)
}

/// When the holder of the conversation aliased `c` must reply, its campaign's `inbox_settings` row aliased
/// `s`; NULL when no timer runs: the campaign sets `reply_within_seconds`, the conversation is open, held
/// and its member waits for a reply, and its holder has not let this wait lapse. Due that long after the
/// later of the wait's start and the assignment, so every path that assigns, unassigns, resolves or replies
/// moves it in its own transaction. The one definition of "due" (`conversations_reply_timers` indexes its
/// start): GetConversation shows it, the timers fire by it (`store::replies`).
macro_rules! reply_due {
    () => {
        "CASE WHEN c.awaiting_reply_since IS NOT NULL AND c.assignee_id IS NOT NULL AND c.status = 'OPEN' \
                   AND NOT (c.assignee_id = ANY (c.lapsed_by)) AND s.reply_within_seconds IS NOT NULL \
              THEN greatest(c.awaiting_reply_since, c.assigned_at) + make_interval(secs => s.reply_within_seconds) \
         END"
    };
}
pub(crate) use reply_due;

/// The campaign's queue clock (`inbox_settings.queue_clock`, of the settings row aliased `settings`) moved
/// on for `arrivals` (an SQL expression, 0 or more) conversations joining its queue: each takes the next
/// microsecond from the transaction's time, or past the last one taken if that is later. The clock is on the
/// campaign's settings row, which every writer of a campaign's queue holds locked until it commits, so
/// arrivals follow the order writers commit in, which is the feed's; and its time is `now()`, no volatile
/// function or global sequence, so a distributed PostgreSQL runs it on the campaign's node. The first
/// arrival taken is [`first_arrival`] of the row as updated.
pub(crate) fn advance_queue_clock(settings: &str, arrivals: &str) -> String {
    format!(
        "CASE WHEN {arrivals} > 0 \
              THEN greatest({NOW_MICROS}, {settings}.queue_clock + 1) \
                   + {arrivals} - 1 \
              ELSE {settings}.queue_clock END"
    )
}

/// The first arrival [`advance_queue_clock`] gave, from the settings row aliased `settings` as updated (in
/// the UPDATE's RETURNING).
pub(crate) fn first_arrival(settings: &str, arrivals: &str) -> String {
    format!("{settings}.queue_clock - {arrivals} + 1")
}

/// An UPDATE of campaign `campaign`'s settings row for conversations of the relation `joining` about to join
/// its queue: its waiting flag set, its queue clock moved on for them ([`advance_queue_clock`]) and its
/// event clock to their events' stamp (the column `stamp` of `joining`, each made by [`stamp_after`] the
/// event clock as read); it returns `first_arrival`, the first of their arrivals, or no row when none joins.
pub(crate) fn queue_arrivals(campaign: &str, joining: &str) -> String {
    format!(
        "UPDATE inbox_settings s SET has_waiting = true, queue_clock = {}, \
                event_clock = greatest(s.event_clock, r.stamp) \
           FROM (SELECT count(*) AS n, max(stamp) AS stamp FROM {joining}) AS r \
          WHERE s.campaign_id = {campaign} AND r.n > 0 \
         RETURNING {} AS first_arrival",
        advance_queue_clock("s", "r.n"),
        first_arrival("s", "r.n")
    )
}

/// A new waiting conversation's queue key (`waiting_conversations.position`), the one order of the queue:
/// drains, ListWaitingConversations and queue positions all order by it. Its effective arrival: `arrival`
/// (microseconds, from the campaign's queue clock: [`advance_queue_clock`]) less `head_start` (an SQL
/// expression: `domain::auto_assign::Priority::head_start_micros`), times 1000, plus the arrival's last
/// three digits, which tell apart two conversations whose priorities bring them to the same microsecond.
pub(crate) fn queue_key(arrival: &str, head_start: &str) -> String {
    format!("(({arrival} - {head_start}) * 1000 + {arrival} % 1000)")
}

/// The queue key of a conversation returned to the front of the queue at `arrival` (as in [`queue_key`]):
/// negative, ahead of every new one, and the later returned the further ahead.
pub(crate) fn front_of_queue_key(arrival: &str) -> String {
    format!("-({arrival} * 1000 + {arrival} % 1000)")
}

/// An event's stamp ([`Event::stamp`]) after the clocks `clocks` (SQL expressions, each the `clock` of a row
/// the event is about, or the campaign's `event_clock`; NULLs count for nothing): one more than the
/// greatest, or the transaction's start in microseconds if that is later (a hybrid logical clock). The
/// clocks order the events about one row as their writers took it, whatever the machines' clocks say; the
/// time orders events that share no row as they happened (those of calls made one after another), where
/// nothing else orders them. The statement then sets those clocks to it.
pub(crate) fn stamp_after(clocks: &[&str]) -> String {
    format!(
        "greatest(1 + greatest({}), {NOW_MICROS})",
        clocks.join(", ")
    )
}

/// The transaction's start (`now()`: stable, so Citus allows it in an UPDATE), in microseconds since the
/// epoch; a scalar subquery, so a statement reckons it once, not once per row (`extract` is numeric).
const NOW_MICROS: &str = "(SELECT (extract(epoch FROM now()) * 1000000)::bigint)";

/// The event clock of campaign `campaign` (a bind parameter), for [`stamp_after`]: a scalar read of its
/// settings row, which the writers of its queue and its shifts hold locked.
pub(crate) fn campaign_event_clock(campaign: &str) -> String {
    format!("(SELECT s.event_clock FROM inbox_settings s WHERE s.campaign_id = {campaign})")
}

/// Who a conversation counts toward in the organizers' loads: its assignee `assignee` while its status
/// `status` is OPEN, nobody (NULL) otherwise (a load, `domain::auto_assign::routing::Load`, counts open
/// conversations).
pub(crate) fn open_holder(status: &str, assignee: &str) -> String {
    format!("CASE WHEN {status} = 'OPEN' THEN {assignee} END")
}

/// An INSERT appending a statement's net load changes (`organizer_load_changes`, which auto-assign batches
/// fold into `organizer_loads`). `moves` is a query whose rows are `(campaign_id, held_before, held_after)`:
/// a changed conversation's [`open_holder`] before and after the statement. Every statement that changes a
/// conversation's assignee or status appends its own: no trigger, so a distributed PostgreSQL runs it on the
/// campaign's node like the rest of the statement.
pub(crate) fn record_load_changes(moves: &str) -> String {
    format!(
        "INSERT INTO organizer_load_changes (campaign_id, user_id, delta) \
         SELECT m.campaign_id, u.user_id, sum(u.delta) \
           FROM ({moves}) AS m(campaign_id, held_before, held_after) \
          CROSS JOIN LATERAL (VALUES (m.held_before, -1), (m.held_after, 1)) AS u(user_id, delta) \
          WHERE u.user_id IS NOT NULL \
          GROUP BY m.campaign_id, u.user_id HAVING sum(u.delta) <> 0"
    )
}

/// Why the holder of the conversation aliased `conv`, the `users` row aliased `holder`, cannot answer it
/// (`'HOLDER_INACTIVE'`, `'HOLDER_NO_REPLY_ACCESS'`), or NULL when they can. The SQL form of
/// `domain::holders::unreachable`: deactivated, or an organizer no access group lets reply to it.
pub(crate) fn unreachable_cause(holder: &str, conv: &str) -> String {
    format!(
        "CASE WHEN NOT {holder}.active THEN 'HOLDER_INACTIVE' \
              WHEN {holder}.role = 'ORGANIZER' AND NOT {} THEN 'HOLDER_NO_REPLY_ACCESS' END",
        may_reply(&format!("{holder}.user_id"), conv)
    )
}

/// One history event's columns, each an SQL expression over the statement's row source; `NULL` where a
/// kind of event has no value. Every `INSERT INTO assignment_events` is built from one of these
/// ([`Event::insert`]), so the columns an event has, and what an unset one holds, are written here once;
/// `event_id` and `occurred_at` are the table's own defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event<'a> {
    pub campaign_id: &'a str,
    pub conversation_id: &'a str,
    pub action: &'a str,
    pub from_user_id: &'a str,
    pub to_user_id: &'a str,
    pub actor_id: &'a str,
    /// `'MANUAL'`, `'BULK'` or `'AUTO'`.
    pub source: &'a str,
    pub request_id: &'a str,
    /// Availability events: whose availability changed, and to what.
    pub user_id: &'a str,
    pub availability: &'a str,
    /// Why an automatic change happened, when it was not a trigger (e.g. `'RETURNED_TO_QUEUE'`).
    pub cause: &'a str,
    /// Its feed number, for a writer that numbers its own events (an auto-assign batch); NULL: the
    /// sequencer numbers it after the commit.
    pub seq: &'a str,
    /// Where the sequencer puts it among the campaign's unnumbered events (`store::feed::FEED_ORDER`);
    /// NULL only with a `seq`. One more than the clock of each row it is about (a conversation's or a
    /// user's `clock`, the campaign's `event_clock` for its queue and its shifts), read under that row's
    /// lock; the statement moves those clocks to it ([`stamp_after`]). So a writer that waited for another's
    /// lock stamps later, and events of writers sharing no row may be numbered in either order.
    pub stamp: &'a str,
    /// QUEUED from a trigger: the priority it waits with.
    pub priority: &'a str,
}

impl<'a> Event<'a> {
    /// An event with every optional column NULL; set the ones a kind of event has.
    pub(crate) const fn of(
        campaign_id: &'a str,
        action: &'a str,
        actor_id: &'a str,
        source: &'a str,
        request_id: &'a str,
    ) -> Self {
        Event {
            campaign_id,
            conversation_id: "NULL",
            action,
            from_user_id: "NULL",
            to_user_id: "NULL",
            actor_id,
            source,
            request_id,
            user_id: "NULL",
            availability: "NULL",
            cause: "NULL",
            seq: "NULL",
            stamp: "NULL",
            priority: "NULL",
        }
    }

    /// `INSERT INTO assignment_events (…) SELECT <these expressions> {rows}`: `rows` is the rest of the
    /// SELECT, from its `FROM` on (`"FROM updated"`, `"FROM x ORDER BY …"`: ids follow that order).
    pub(crate) fn insert(&self, rows: &str) -> String {
        let Event {
            campaign_id,
            conversation_id,
            action,
            from_user_id,
            to_user_id,
            actor_id,
            source,
            request_id,
            user_id,
            availability,
            cause,
            seq,
            stamp,
            priority,
        } = self;
        format!(
            "INSERT INTO assignment_events (campaign_id, conversation_id, action, from_user_id, to_user_id, \
                    actor_id, source, request_id, user_id, availability, cause, seq, stamp, priority) \
             SELECT {campaign_id}, {conversation_id}, {action}, {from_user_id}, {to_user_id}, {actor_id}, \
                    {source}, {request_id}, {user_id}, {availability}, {cause}, {seq}, {stamp}, {priority} {rows}"
        )
    }
}

/// A CTE body that takes the conversations of the relation `changed` (`campaign_id`, `conversation_id`)
/// out of the waiting queue where `when` holds (an expression over `changed`), returning the
/// `campaign_id, conversation_id` of those that were waiting, and the columns `returning` (a list over
/// `changed`, after a comma; empty: none): what "a conversation leaves the queue" does to the queue. Each queue row is found by its key and deleted by row id, so a kept plan stays bounded
/// (`Store::begin_keyed`). Whoever takes a conversation out of the queue holds its row lock (`changed`
/// comes from an UPDATE of it). Most callers want [`leaves_queue`], which records it too.
pub(crate) fn leave_queue(changed: &str, when: &str, returning: &str) -> String {
    format!(
        "DELETE FROM waiting_conversations w \
          USING {changed} {} \
          WHERE {when} AND {} \
         RETURNING w.campaign_id, w.conversation_id{returning}",
        row_by_key(
            "waiting_conversations",
            "q",
            &format!("{changed}.campaign_id"),
            &format!("{changed}.conversation_id"),
            "",
            "x"
        ),
        by_row_id("w", &format!("{changed}.campaign_id"), "x.row_id")
    )
}

/// The CTEs `left_queue` ([`leave_queue`] of `changed` where `when` holds) and `events`, which records in
/// one ordered insert (separate inserts in one statement run in no order PostgreSQL promises) a LEFT_QUEUE
/// event for each conversation that left the queue, then the change's own events: the rows of `changes`, a
/// SELECT of `campaign_id, conversation_id, action, from_user_id, to_user_id, ord, stamp` (`ord` orders
/// them; `stamp`: [`Event::stamp`]). A LEFT_QUEUE event takes its conversation's stamp, the `clock` of its
/// row in `changed` (as changed). All are made by `actor_id` from `source` with `request_id` (SQL
/// expressions). This is the order an auto-assign batch writes a drained conversation's events in:
/// LEFT_QUEUE, then ASSIGN.
pub(crate) fn leaves_queue(
    changed: &str,
    when: &str,
    changes: &str,
    actor_id: &str,
    source: &str,
    request_id: &str,
) -> String {
    let events = Event {
        conversation_id: "e.conversation_id",
        from_user_id: "e.from_user_id",
        to_user_id: "e.to_user_id",
        stamp: "e.stamp",
        ..Event::of("e.campaign_id", "e.action", actor_id, source, request_id)
    };
    format!(
        "left_queue AS ({}), events AS ({})",
        leave_queue(changed, when, &format!(", {changed}.clock AS stamp")),
        events.insert(&format!(
            "FROM (SELECT l.campaign_id, l.conversation_id, 'LEFT_QUEUE' AS action, NULL::text AS from_user_id, \
                          NULL::text AS to_user_id, 0 AS part, 0::bigint AS ord, l.stamp \
                     FROM left_queue l \
                   UNION ALL \
                   SELECT c.campaign_id, c.conversation_id, c.action, c.from_user_id, c.to_user_id, 1, c.ord, \
                          c.stamp \
                     FROM ({changes}) AS c(campaign_id, conversation_id, action, from_user_id, to_user_id, \
                                           ord, stamp)) AS e \
             ORDER BY e.part, e.ord, e.conversation_id COLLATE \"C\""
        ))
    )
}
