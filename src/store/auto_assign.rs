//! Auto-assignment: inbox settings, the campaign's auto-assign lock (its settings row), the triggers of a
//! batch with their conversations and eligible organizers, and the batch's writes in one statement.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::conversations::COLUMNS;
use super::{Conn, grant_exists};
use crate::domain::auto_assign::{
    AutoOutcome, BatchPlan, Load, OutcomeKind, RecordedTrigger, RotationStart, RoutingMode,
    Trigger, TriggerState, Verdict, effective_capacity,
};
use crate::domain::model::Conversation;
use crate::error::{AppError, AppResult};

/// The campaign's auto-assign lock, held until the transaction ends, and what it guards.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Cursor {
    pub auto_assign_enabled: bool,
    /// Whether conversations may be waiting (see the `has_waiting` column).
    pub has_waiting: bool,
    /// The organizer most recently auto-assigned.
    pub last_auto_assignee_id: Option<String>,
    pub default_capacity: i32,
    pub routing_mode: RoutingMode,
    pub rotation_start: RotationStart,
}

/// What a batch decides on, read under the lock: first the waiting conversations it drains (queue order),
/// then its triggers whose conversation exists (batch order). `states[i]` is the trigger at position
/// `indexes[i]` of the batch (`None`: a waiting conversation), and `conversations[i]` its conversation.
#[derive(Debug, Clone, Default)]
pub struct TriggerReads {
    pub states: Vec<TriggerState>,
    pub indexes: Vec<Option<usize>>,
    pub conversations: Vec<Conversation>,
    /// How many waiting conversations were read (at most the limit asked for); they come first.
    pub waiting: usize,
    /// Since when each waiting conversation has waited (`None` for triggers).
    pub waiting_since: Vec<Option<DateTime<Utc>>>,
    /// The organizer most recently assigned a conversation by any path.
    pub last_assigned: Option<String>,
    /// The loads of the campaign's active, available organizers, when capacity or balance is in play.
    pub loads: Option<HashMap<String, Load>>,
}

/// What a batch reads besides its triggers' conversations.
#[derive(Debug, Clone, Copy)]
pub struct ReadScope {
    /// Auto-assignment is on: read who is eligible (and loads, when they matter).
    pub enabled: bool,
    /// Read the organizer most recently assigned by any path.
    pub last_assigned: bool,
    /// How many waiting conversations to drain first (0: none).
    pub drain: i64,
    /// The campaign's default capacity (0 = unlimited).
    pub default_capacity: i32,
    /// Balanced routing: loads matter even without capacities.
    pub balanced: bool,
}

/// Folds the campaign's (`$1`) pending load changes into its organizers' counts when `{wanted}` holds; `pending`
/// is what was folded, per organizer. Only the holder of the campaign's auto-assign lock may run it: a load
/// is the folded count plus the pending changes, read in one snapshot, and only lock holders fold, so no
/// change is counted twice or missed (see the `organizer_loads` migration).
fn fold_ctes(wanted: &str) -> String {
    format!(
        "folded AS ( \
           DELETE FROM organizer_load_changes WHERE campaign_id = $1 AND {wanted} \
           RETURNING user_id, delta \
         ), pending AS ( \
           SELECT user_id, sum(delta)::integer AS delta FROM folded GROUP BY user_id \
         ), counted AS ( \
           INSERT INTO organizer_loads AS l (campaign_id, user_id, open) \
           SELECT $1, user_id, delta FROM pending \
           ON CONFLICT (campaign_id, user_id) DO UPDATE SET open = l.open + excluded.open \
         )"
    )
}

/// Tags travel as one string per conversation; validated tags never contain this control character.
const TAG_SEPARATOR: &str = "\u{1f}";

/// Forgets trigger records older than `retention`, a chunk at a time so no statement runs long.
/// Returns how many were deleted.
pub async fn prune_triggers(conn: &mut Conn, retention: std::time::Duration) -> AppResult<u64> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM auto_assign_triggers WHERE (campaign_id, trigger_id) IN ( \
               SELECT campaign_id, trigger_id FROM auto_assign_triggers \
                WHERE received_at < now() - make_interval(secs => $1) LIMIT 5000)",
        )
        .bind(retention.as_secs_f64())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < 5000 {
            return Ok(total);
        }
    }
}

/// Creates the conversations named with member data that do not exist yet, in id order so that concurrent
/// batches take their locks in the same order. Run it before [`lock`], so it never lengthens the lock.
pub async fn create_missing_conversations(
    conn: &mut Conn,
    campaign_id: &str,
    triggers: &[Trigger],
) -> AppResult<()> {
    let mut creates: Vec<&Trigger> = triggers.iter().filter(|t| t.member_id.is_some()).collect();
    if creates.is_empty() {
        return Ok(());
    }
    creates.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
    creates.dedup_by(|a, b| a.conversation_id == b.conversation_id);
    let ids: Vec<&str> = creates.iter().map(|t| t.conversation_id.as_str()).collect();
    let members: Vec<&str> = creates
        .iter()
        .map(|t| t.member_id.as_deref().unwrap_or_default())
        .collect();
    let tags: Vec<String> = creates
        .iter()
        .map(|t| t.member_tags.join(TAG_SEPARATOR))
        .collect();
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id, member_tags) \
         SELECT $1, i.conversation_id, i.member_id, string_to_array(i.tags, $5) \
         FROM unnest($2::text[], $3::text[], $4::text[]) AS i(conversation_id, member_id, tags) \
         ON CONFLICT (campaign_id, conversation_id) DO NOTHING",
    )
    .bind(campaign_id)
    .bind(&ids)
    .bind(&members)
    .bind(&tags)
    .bind(TAG_SEPARATOR)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the campaign's auto-assign lock (`SELECT … FOR UPDATE` of its settings row): from here to the
/// end of the transaction every other batch of the campaign waits. The campaign's organizers are
/// share-locked with it, so eligibility (role, active) is decided on facts no one can change until the
/// batch commits. A campaign never configured gets its row (auto-assignment off), so that even its triggers
/// serialise: a redelivery racing an admin switching auto-assignment on must see one history.
pub async fn lock(conn: &mut Conn, campaign_id: &str) -> AppResult<Cursor> {
    const LOCK: &str = "SELECT auto_assign_enabled, has_waiting, last_auto_assignee_id, default_capacity, \
                               routing_mode, rotation_start \
                        FROM inbox_settings WHERE campaign_id = $1 FOR UPDATE";
    let cursor = match sqlx::query_as(LOCK)
        .bind(campaign_id)
        .fetch_optional(&mut *conn)
        .await?
    {
        Some(cursor) => cursor,
        None => {
            sqlx::query(
                "INSERT INTO inbox_settings (campaign_id) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(campaign_id)
            .execute(&mut *conn)
            .await?;
            sqlx::query_as(LOCK)
                .bind(campaign_id)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    Ok(cursor)
}

/// Locks the batch's conversations (in byte order of id, as every multi-row locker does, so they never
/// deadlock) and reads each with its trigger record and, when auto-assignment is on, its eligible organizers
/// (active organizers an access group lets reply, sorted by id). The campaign's organizers are share-locked
/// as they are read: their role and active flag cannot change until the batch commits. When capacity or
/// balance is in play, folds the campaign's pending load changes and reads the organizers' loads in the same
/// statement. Run it after [`lock`], so a batch waiting for the campaign's lock holds nothing else. Triggers
/// whose conversation does not exist are left out; the rest come back in batch order.
/// With `drain` > 0, also the first `drain` waiting conversations, locked in the same statement (one lock
/// order for all of a batch's conversations, so it never deadlocks with a bulk batch).
pub async fn read_triggers(
    conn: &mut Conn,
    campaign_id: &str,
    triggers: &[Trigger],
    scope: ReadScope,
) -> AppResult<TriggerReads> {
    // Each row is reached by its whole key, one lookup per item (a LATERAL subquery cannot become a scan of
    // the campaign with a filter): the plan is kept (see `Store::begin_batch`), so its work must stay bounded
    // by the batch at any table size. The items are sorted first, so the conversations are locked in id order.
    let sql = format!(
        "WITH organizers AS MATERIALIZED ( \
           SELECT u.user_id, u.active, u.availability, u.capacity FROM users u \
            WHERE u.campaign_id = $1 AND u.role = 'ORGANIZER' FOR SHARE \
         ), wanted AS MATERIALIZED ( \
           SELECT $4 AND ($7 OR EXISTS (SELECT 1 FROM organizers WHERE capacity IS NOT NULL)) AS loads \
         ), {}, loads AS ( \
           SELECT o.user_id, o.capacity, coalesce(l.open, 0)::bigint + coalesce(p.delta, 0) AS open \
             FROM organizers o \
             LEFT JOIN LATERAL (SELECT l.open FROM organizer_loads l \
                                 WHERE l.campaign_id = $1 AND l.user_id = o.user_id) AS l ON true \
             LEFT JOIN pending p ON p.user_id = o.user_id \
            WHERE o.active AND o.availability = 'AVAILABLE' \
         ), items AS ( \
           SELECT i.ord, i.trigger_id, i.conversation_id, NULL::bigint AS position, \
                  NULL::timestamptz AS waiting_since \
             FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS i(trigger_id, conversation_id, ord) \
           UNION ALL \
           SELECT NULL, NULL, w.conversation_id, w.position, w.waiting_since FROM ( \
             SELECT conversation_id, position, waiting_since FROM waiting_conversations \
              WHERE campaign_id = $1 ORDER BY position LIMIT $6) AS w \
         ) \
         SELECT i.ord, i.trigger_id, i.position, i.waiting_since, {COLUMNS}, \
                t.outcome AS recorded_outcome, t.assignee_id AS recorded_assignee, \
                t.conversation_id AS recorded_conversation, \
                CASE WHEN $4 THEN ARRAY(SELECT o.user_id FROM organizers o \
                                         WHERE o.active AND o.availability = 'AVAILABLE' AND {} \
                                         ORDER BY o.user_id COLLATE \"C\") \
                     ELSE '{{}}'::text[] END AS eligible, \
                (SELECT e.to_user_id FROM assignment_events e \
                  WHERE $5 AND e.campaign_id = $1 AND e.action IN ('ASSIGN', 'REASSIGN') \
                    AND (SELECT a.role FROM users a \
                          WHERE a.campaign_id = $1 AND a.user_id = e.to_user_id) = 'ORGANIZER' \
                  ORDER BY e.event_id DESC LIMIT 1) AS last_assigned, \
                (SELECT array_agg(user_id ORDER BY user_id) FROM loads \
                  WHERE (SELECT loads FROM wanted)) AS load_users, \
                (SELECT array_agg(capacity ORDER BY user_id) FROM loads \
                  WHERE (SELECT loads FROM wanted)) AS load_capacities, \
                (SELECT array_agg(open ORDER BY user_id) FROM loads \
                  WHERE (SELECT loads FROM wanted)) AS load_open, \
                (SELECT loads FROM wanted) AS loads_read \
         FROM (SELECT * FROM items ORDER BY conversation_id COLLATE \"C\", ord) AS i \
         CROSS JOIN LATERAL ( \
           SELECT * FROM conversations c \
            WHERE c.campaign_id = $1 AND c.conversation_id = i.conversation_id FOR UPDATE) AS c \
         LEFT JOIN LATERAL ( \
           SELECT t.outcome, t.assignee_id, t.conversation_id FROM auto_assign_triggers t \
            WHERE t.campaign_id = $1 AND t.trigger_id = i.trigger_id LIMIT 1) AS t ON true",
        fold_ctes("(SELECT loads FROM wanted)"),
        grant_exists("o.user_id", "can_reply"),
    );
    let trigger_ids: Vec<&str> = triggers.iter().map(|t| t.trigger_id.as_str()).collect();
    let conversation_ids: Vec<&str> = triggers
        .iter()
        .map(|t| t.conversation_id.as_str())
        .collect();
    let rows: Vec<TriggerRow> = sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(&trigger_ids)
        .bind(&conversation_ids)
        .bind(scope.enabled)
        .bind(scope.last_assigned)
        .bind(scope.drain)
        .bind(scope.default_capacity > 0 || scope.balanced)
        .fetch_all(conn)
        .await?;
    let mut rows = rows;
    // Waiting conversations first, in queue order; then the triggers in batch order.
    rows.sort_by_key(|row| (row.ord.is_some(), row.position, row.ord));
    reads_from(rows, scope.default_capacity)
}

fn reads_from(rows: Vec<TriggerRow>, default_capacity: i32) -> AppResult<TriggerReads> {
    let mut reads = TriggerReads::default();
    if let Some(row) = rows.first() {
        reads.last_assigned = row.last_assigned.clone();
        if row.loads_read {
            let users = row.load_users.iter().flatten();
            let capacities = row.load_capacities.iter().flatten();
            let open = row.load_open.iter().flatten();
            let loads = users
                .zip(capacities)
                .zip(open)
                .map(|((user_id, capacity), open)| {
                    let load = Load {
                        open: u32::try_from(*open).unwrap_or(0),
                        capacity: effective_capacity(*capacity, default_capacity),
                    };
                    (user_id.clone(), load)
                });
            reads.loads = Some(loads.collect());
        }
    }
    for row in rows {
        reads.waiting_since.push(row.waiting_since);
        let (index, state, conversation) = row.into_parts()?;
        reads.waiting += usize::from(index.is_none());
        reads.states.push(state);
        reads.indexes.push(index);
        reads.conversations.push(conversation);
    }
    Ok(reads)
}

/// Folds a campaign's pending load changes into its counts, under the auto-assign lock the caller holds;
/// for campaigns whose batches do not read loads. Returns how many changes it folded.
pub async fn fold_loads(conn: &mut Conn, campaign_id: &str) -> AppResult<u64> {
    let sql = format!("WITH {} SELECT count(*) FROM folded", fold_ctes("true"));
    let folded: i64 = sqlx::query_scalar(&sql)
        .bind(campaign_id)
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(folded).unwrap_or(0))
}

/// Campaigns with load changes not yet folded into their counts.
pub async fn campaigns_with_load_changes(conn: &mut Conn) -> AppResult<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT campaign_id FROM organizer_load_changes")
            .fetch_all(conn)
            .await?,
    )
}

/// Where a batch leaves the waiting queue: `has_waiting` for the campaign's flag after the batch.
#[derive(Debug, Clone, Copy)]
pub struct WaitingAfter {
    pub was: bool,
    pub has_waiting: bool,
}

/// Writes a planned batch in one statement (rows to change are found by their whole key, one lookup each,
/// and changed by their row id: the kept plan stays bounded by the batch; see `read_triggers`): assignments with their `auto` history events (drained
/// conversations leave the queue), the cursor, the trigger records, newly waiting conversations (at the
/// back of the queue, in batch order) and the campaign's waiting flag. `states[i]` pairs with
/// `plan.verdicts[i]` and `request_ids[i]`. Returns the conversations it assigned, by id.
pub async fn write_plan(
    conn: &mut Conn,
    campaign_id: &str,
    states: &[TriggerState],
    request_ids: &[Option<&str>],
    plan: &BatchPlan,
    old_cursor: Option<&str>,
    waiting: WaitingAfter,
) -> AppResult<HashMap<String, Conversation>> {
    let mut assign_ids = Vec::new();
    let mut assignees = Vec::new();
    let mut assign_request_ids = Vec::new();
    let mut record = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut queued: Vec<&str> = Vec::new();
    let mut queued_request_ids: Vec<Option<&str>> = Vec::new();
    for ((state, verdict), request_id) in states.iter().zip(&plan.verdicts).zip(request_ids) {
        let Verdict::Decided(decision) = verdict else {
            continue;
        };
        if let Some(user) = decision.assigns() {
            assign_ids.push(state.conversation_id.as_str());
            assignees.push(user);
            assign_request_ids.push(*request_id);
        }
        let Some(trigger_id) = &state.trigger_id else {
            continue;
        };
        if !decision.duplicate {
            record.0.push(trigger_id.as_str());
            record.1.push(state.conversation_id.as_str());
            record.2.push(decision.outcome.kind());
            record.3.push(decision.outcome.assignee());
            if decision.outcome == AutoOutcome::Queued {
                queued.push(state.conversation_id.as_str());
                queued_request_ids.push(*request_id);
            }
        }
    }
    let cursor = plan.cursor.as_deref().filter(|c| Some(*c) != old_cursor);
    let flag = (waiting.has_waiting != waiting.was).then_some(waiting.has_waiting);
    if assign_ids.is_empty() && record.0.is_empty() && cursor.is_none() && flag.is_none() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "WITH assigned AS ( \
           UPDATE conversations c \
              SET assignee_id = a.assignee_id, assigned_at = now(), assigned_by = NULL, \
                  version = c.version + 1, updated_at = now() \
             FROM (SELECT a.assignee_id, x.row_id \
                     FROM unnest($2::text[], $3::text[]) AS a(conversation_id, assignee_id) \
                    CROSS JOIN LATERAL (SELECT ctid AS row_id FROM conversations \
                                         WHERE campaign_id = $1 AND conversation_id = a.conversation_id \
                                         LIMIT 1) AS x) AS a \
            WHERE c.ctid = a.row_id AND c.assignee_id IS NULL \
           RETURNING {COLUMNS} \
         ), events AS ( \
           INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, source, request_id) \
           SELECT $1, a.conversation_id, 'ASSIGN', a.assignee_id, 'AUTO', a.request_id \
             FROM unnest($2::text[], $3::text[], $9::text[]) \
                  WITH ORDINALITY AS a(conversation_id, assignee_id, request_id, ord) \
             JOIN assigned ON assigned.conversation_id = a.conversation_id \
            ORDER BY a.ord \
         ), drained AS ( \
           DELETE FROM waiting_conversations w \
            USING assigned CROSS JOIN LATERAL ( \
                    SELECT ctid AS row_id FROM waiting_conversations \
                     WHERE campaign_id = $1 AND conversation_id = assigned.conversation_id LIMIT 1) AS x \
            WHERE w.ctid = x.row_id \
           RETURNING w.conversation_id \
         ), drained_events AS ( \
           INSERT INTO assignment_events (campaign_id, conversation_id, action, source) \
           SELECT $1, conversation_id, 'LEFT_QUEUE', 'AUTO' FROM drained \
         ), enqueued AS ( \
           INSERT INTO waiting_conversations (campaign_id, conversation_id, position) \
           SELECT $1, q.conversation_id, nextval('waiting_position') FROM ( \
             SELECT conversation_id FROM unnest($10::text[]) WITH ORDINALITY AS u(conversation_id, ord) \
              ORDER BY ord) AS q \
           ON CONFLICT (campaign_id, conversation_id) DO NOTHING \
           RETURNING conversation_id \
         ), queued_events AS ( \
           INSERT INTO assignment_events (campaign_id, conversation_id, action, source, request_id) \
           SELECT $1, q.conversation_id, 'QUEUED', 'AUTO', q.request_id \
             FROM unnest($10::text[], $12::text[]) AS q(conversation_id, request_id) \
             JOIN enqueued ON enqueued.conversation_id = q.conversation_id \
         ), moved AS ( \
           UPDATE inbox_settings SET last_auto_assignee_id = coalesce($4, last_auto_assignee_id), \
                                     has_waiting = coalesce($11, has_waiting) \
            WHERE campaign_id = $1 AND ($4::text IS NOT NULL OR $11::boolean IS NOT NULL) \
         ), recorded AS ( \
           INSERT INTO auto_assign_triggers (campaign_id, trigger_id, conversation_id, outcome, assignee_id) \
           SELECT $1, r.* FROM unnest($5::text[], $6::text[], $7::text[], $8::text[]) AS r \
           ON CONFLICT (campaign_id, trigger_id) DO NOTHING \
         ) \
         SELECT * FROM assigned"
    );
    let rows: Vec<Conversation> = sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(&assign_ids)
        .bind(&assignees)
        .bind(cursor)
        .bind(&record.0)
        .bind(&record.1)
        .bind(&record.2)
        .bind(&record.3)
        .bind(&assign_request_ids)
        .bind(&queued)
        .bind(flag)
        .bind(&queued_request_ids)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.conversation_id.clone(), row))
        .collect())
}

#[derive(sqlx::FromRow)]
struct TriggerRow {
    /// `None` for a waiting conversation.
    ord: Option<i64>,
    trigger_id: Option<String>,
    position: Option<i64>,
    waiting_since: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    conversation: Conversation,
    recorded_outcome: Option<OutcomeKind>,
    recorded_assignee: Option<String>,
    recorded_conversation: Option<String>,
    eligible: Vec<String>,
    last_assigned: Option<String>,
    load_users: Option<Vec<String>>,
    load_capacities: Option<Vec<Option<i32>>>,
    load_open: Option<Vec<i64>>,
    loads_read: bool,
}

impl TriggerRow {
    fn into_parts(self) -> AppResult<(Option<usize>, TriggerState, Conversation)> {
        let recorded = match (self.recorded_outcome, self.recorded_conversation) {
            (Some(kind), Some(conversation_id)) => {
                let outcome =
                    AutoOutcome::from_record(kind, self.recorded_assignee).ok_or_else(|| {
                        corrupt_record(self.trigger_id.as_deref().unwrap_or_default())
                    })?;
                Some(RecordedTrigger {
                    conversation_id,
                    outcome,
                })
            }
            _ => None,
        };
        let state = TriggerState {
            trigger_id: self.trigger_id,
            conversation_id: self.conversation.conversation_id.clone(),
            current_assignee: self.conversation.assignee_id.clone(),
            recorded,
            eligible: self.eligible,
        };
        let index = self.ord.map(|ord| (ord - 1) as usize);
        Ok((index, state, self.conversation))
    }
}

/// A trigger record that says "assigned" without naming to whom: only a broken write could leave one.
fn corrupt_record(trigger_id: &str) -> AppError {
    AppError::Database(sqlx::Error::Decode(
        format!(
            "auto_assign_triggers row {trigger_id:?} records an assignment without an assignee"
        )
        .into(),
    ))
}
