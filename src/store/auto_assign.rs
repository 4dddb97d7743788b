//! Auto-assignment: inbox settings, the campaign's auto-assign lock (its settings row), the triggers of a
//! batch with their conversations and eligible organizers, and the batch's writes in one statement.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use super::conversations::COLUMNS;
use super::feed::{FEED_CHANNEL, SEQUENCE_LIMIT, backlog_ctes};
use super::{Conn, by_key, grant_exists};
use crate::domain::auto_assign::{
    AutoOutcome, BatchPlan, Load, OutcomeKind, RecordedTrigger, RotationStart, RoutingMode,
    Trigger, TriggerState, Verdict, effective_capacity, still_waits,
};
use crate::domain::model::Conversation;
use crate::error::{AppError, AppResult};

/// The campaign's locked `inbox_settings` row: its auto-assign lock, held until the transaction ends, and
/// what it guards (the settings a batch decides by, the round-robin cursor among them).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedSettings {
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
    /// How many waiting conversations are to be drained; they come first.
    pub waiting: usize,
    /// How many rows of the queue were read (at most the limit asked for): also those that had left it by
    /// the time their conversation was locked, which are not drained.
    pub queue_read: usize,
    /// Since when each waiting conversation has waited (`None` for triggers).
    pub waiting_since: Vec<Option<DateTime<Utc>>>,
    /// The organizer most recently assigned a conversation by any path.
    pub last_assigned: Option<String>,
    /// The loads of the campaign's active, available organizers, when capacity or balance is in play.
    pub loads: Option<HashMap<String, Load>>,
}

/// What a batch reads besides its triggers' conversations.
#[derive(Debug, Clone, Copy)]
pub struct BatchReads {
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

/// One campaign's triggers in a batch.
#[derive(Debug, Clone, Copy)]
pub struct CampaignTriggers<'a> {
    pub campaign_id: &'a str,
    pub triggers: &'a [Trigger],
}

/// Folds the pending load changes of the campaigns named by `{campaigns}` (an array) into their organizers'
/// counts; `folded` is what was folded, and `pending` its sum per organizer. Only the holder of a campaign's auto-assign lock may fold it: a load
/// is the folded count plus the pending changes, read in one snapshot, and only lock holders fold, so no
/// change is counted twice or missed (see the `organizer_loads` migration).
fn fold_ctes(campaigns: &str) -> String {
    format!(
        "folded AS ( \
           DELETE FROM organizer_load_changes WHERE campaign_id = ANY({campaigns}) \
           RETURNING campaign_id, user_id, delta \
         ), pending AS ( \
           SELECT campaign_id, user_id, sum(delta)::integer AS delta FROM folded GROUP BY campaign_id, user_id \
         ), counted AS ( \
           INSERT INTO organizer_loads AS l (campaign_id, user_id, open) \
           SELECT campaign_id, user_id, delta FROM pending \
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

/// Takes the campaign's auto-assign lock; see [`lock_campaigns`].
pub async fn lock(conn: &mut Conn, campaign_id: &str) -> AppResult<LockedSettings> {
    let mut locked = lock_campaigns(conn, &[campaign_id], &[], false).await?;
    locked
        .remove(campaign_id)
        .ok_or_else(|| missing_settings(campaign_id))
}

/// Takes the auto-assign locks of `campaign_ids` (`SELECT … FOR UPDATE` of their settings rows, in byte order
/// of id, as every batch does, so batches of several campaigns never deadlock): from here to the end of the
/// transaction every other batch of these campaigns waits. A campaign never configured gets its row
/// (auto-assignment off), so that even its triggers serialise: a redelivery racing an admin switching
/// auto-assignment on must see one history. First, in the same statement, creates the conversations the
/// parts' triggers name with member data that do not exist yet (in (campaign, id) order, so concurrent
/// batches wait on each other's in one order), before any lock is taken. With `feed_heads`, after the
/// settings rows it also locks the campaigns' feed heads (making them on first use), in the same order, so
/// that the batch's write can number the campaigns' events (see [`write_plan`]).
pub async fn lock_campaigns(
    conn: &mut Conn,
    campaign_ids: &[&str],
    parts: &[CampaignTriggers<'_>],
    feed_heads: bool,
) -> AppResult<HashMap<String, LockedSettings>> {
    const COLUMNS: &str = "campaign_id, auto_assign_enabled, has_waiting, last_auto_assignee_id, \
                           default_capacity, routing_mode, rotation_start";
    let mut creates: Vec<(&str, &Trigger)> = parts
        .iter()
        .flat_map(|part| part.triggers.iter().map(move |t| (part.campaign_id, t)))
        .filter(|(_, t)| t.member_id.is_some())
        .collect();
    creates.sort_by(|a, b| (a.0, &a.1.conversation_id).cmp(&(b.0, &b.1.conversation_id)));
    creates.dedup_by(|a, b| a.0 == b.0 && a.1.conversation_id == b.1.conversation_id);
    let create_campaigns: Vec<&str> = creates.iter().map(|(c, _)| *c).collect();
    let ids: Vec<&str> = creates
        .iter()
        .map(|(_, t)| t.conversation_id.as_str())
        .collect();
    let members: Vec<&str> = creates
        .iter()
        .map(|(_, t)| t.member_id.as_deref().unwrap_or_default())
        .collect();
    let tags: Vec<String> = creates
        .iter()
        .map(|(_, t)| t.member_tags.join(TAG_SEPARATOR))
        .collect();
    let mut heads: Vec<&str> = if feed_heads {
        campaign_ids.to_vec()
    } else {
        Vec::new()
    };
    heads.sort_unstable();
    // The inserts are an InitPlan of the lock's condition: they finish before the first row is locked.
    // Rows this statement creates are not in its own snapshot: locked by the next one (first use only).
    // The feed heads are a data-modifying CTE that nothing reads: PostgreSQL runs it after the main query,
    // so once the settings rows are locked. `DO UPDATE … WHERE false` locks an existing head without writing
    // a new version of it: the batch's write moves the head, and a batch that numbers nothing leaves it.
    let create_and_lock = format!(
        "WITH conversations_created AS ( \
           INSERT INTO conversations (campaign_id, conversation_id, member_id, member_tags) \
           SELECT i.campaign_id, i.conversation_id, i.member_id, string_to_array(i.tags, $6) \
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) \
                  AS i(campaign_id, conversation_id, member_id, tags) \
           ON CONFLICT (campaign_id, conversation_id) DO NOTHING \
           RETURNING 1 \
         ), settings_created AS ( \
           INSERT INTO inbox_settings (campaign_id) \
           SELECT k FROM unnest($1::text[]) AS k \
            WHERE NOT EXISTS (SELECT 1 FROM inbox_settings s WHERE s.campaign_id = k) \
           ON CONFLICT DO NOTHING \
           RETURNING 1 \
         ), heads_locked AS ( \
           INSERT INTO feed_heads AS f (campaign_id) \
           SELECT campaign_id FROM unnest($7::text[]) WITH ORDINALITY AS k(campaign_id, ord) ORDER BY ord \
           ON CONFLICT (campaign_id) DO UPDATE SET last_seq = f.last_seq WHERE false \
         ) \
         SELECT {COLUMNS} FROM inbox_settings \
          WHERE campaign_id = ANY($1) \
            AND (SELECT count(*) FROM conversations_created) + (SELECT count(*) FROM settings_created) >= 0 \
          ORDER BY campaign_id COLLATE \"C\" FOR UPDATE"
    );
    let lock = format!(
        "SELECT {COLUMNS} FROM inbox_settings WHERE campaign_id = ANY($1) \
          ORDER BY campaign_id COLLATE \"C\" FOR UPDATE"
    );
    let mut rows: Vec<LockedSettingsRow> = sqlx::query_as(&create_and_lock)
        .bind(campaign_ids)
        .bind(&create_campaigns)
        .bind(&ids)
        .bind(&members)
        .bind(&tags)
        .bind(TAG_SEPARATOR)
        .bind(&heads)
        .fetch_all(&mut *conn)
        .await?;
    if rows.len() < campaign_ids.len() {
        rows = sqlx::query_as(&lock)
            .bind(campaign_ids)
            .fetch_all(&mut *conn)
            .await?;
    }
    Ok(rows
        .into_iter()
        .map(|row| (row.campaign_id, row.settings))
        .collect())
}

#[derive(sqlx::FromRow)]
struct LockedSettingsRow {
    campaign_id: String,
    #[sqlx(flatten)]
    settings: LockedSettings,
}

/// `lock_campaigns` makes every row it locks: only a broken database could leave one out.
fn missing_settings(campaign_id: &str) -> AppError {
    AppError::Database(sqlx::Error::Decode(
        format!("no inbox_settings row for campaign {campaign_id:?} after creating it").into(),
    ))
}

/// Locks the batch's conversations (in byte order of campaign, then id, as every multi-row locker does, so
/// they never deadlock) and reads each with its trigger record and, when its campaign's auto-assignment is
/// on, its eligible organizers (active organizers an access group lets reply, sorted by id). The campaigns'
/// organizers are share-locked as they are read: their role and active flag cannot change until the batch
/// commits. Where capacity or balance is in play, folds the campaign's pending load changes and reads the
/// organizers' loads in the same statement. Run it after [`lock_campaigns`], so a batch waiting for a
/// campaign's lock holds nothing else. With a scope's `drain` > 0, also the campaign's first `drain` waiting
/// conversations, locked in the same statement (one lock order for all of a batch's conversations, so it
/// never deadlocks with a bulk batch). Returns one [`TriggerReads`] per part, in order; triggers whose
/// conversation does not exist are left out, and so are waiting conversations that left the queue after
/// the statement's snapshot (see [`still_waits`]).
pub async fn read_triggers(
    conn: &mut Conn,
    parts: &[(CampaignTriggers<'_>, BatchReads)],
) -> AppResult<Vec<TriggerReads>> {
    // Each row is reached by its whole key, one lookup per item (a LATERAL subquery cannot become a scan of
    // the campaign with a filter), or by its campaign: the plan is kept (see `Store::begin_keyed`), so its
    // work must stay bounded by the batch at any table size. The items are sorted first, and every other
    // relation is LATERAL to them, so the conversations are locked in that order. The queue was read in the
    // statement's snapshot: a waiting conversation's queue row is locked again once its conversation is
    // (whoever takes it out of the queue locks the conversation first and has committed by then), which
    // finds the row gone if a resolve or an assignment deleted it meanwhile.
    let sql = format!(
        "WITH k AS MATERIALIZED ( \
           SELECT * FROM unnest($1::text[], $2::bool[], $3::bool[], $4::int8[], $5::bool[]) \
                  AS k(campaign_id, enabled, last_assigned, drain, loads_matter) \
         ), organizers AS MATERIALIZED ( \
           SELECT u.campaign_id, u.user_id, u.active, u.availability, u.capacity FROM users u \
            WHERE u.campaign_id = ANY($1) AND u.role = 'ORGANIZER' FOR SHARE \
         ), wanted AS MATERIALIZED ( \
           SELECT k.campaign_id, k.enabled, k.last_assigned, \
                  k.enabled AND (k.loads_matter OR EXISTS ( \
                    SELECT 1 FROM organizers o \
                     WHERE o.campaign_id = k.campaign_id AND o.capacity IS NOT NULL)) AS loads \
             FROM k \
         ), {}, facts AS MATERIALIZED ( \
           SELECT w.campaign_id, w.enabled, w.loads AS loads_read, \
                  (SELECT e.to_user_id FROM assignment_events e \
                    WHERE w.last_assigned AND e.campaign_id = w.campaign_id \
                      AND e.action IN ('ASSIGN', 'REASSIGN') \
                      AND (SELECT a.role FROM users a \
                            WHERE a.campaign_id = w.campaign_id AND a.user_id = e.to_user_id) = 'ORGANIZER' \
                    ORDER BY e.event_id DESC LIMIT 1) AS last_assigned, \
                  l.users AS load_users, l.capacities AS load_capacities, l.open AS load_open \
             FROM wanted w \
             LEFT JOIN LATERAL ( \
               SELECT array_agg(o.user_id ORDER BY o.user_id) AS users, \
                      array_agg(o.capacity ORDER BY o.user_id) AS capacities, \
                      array_agg(coalesce(l.open, 0)::bigint + coalesce(p.delta, 0) ORDER BY o.user_id) AS open \
                 FROM (SELECT * FROM organizers o \
                        WHERE w.loads AND o.campaign_id = w.campaign_id AND o.active \
                          AND o.availability = 'AVAILABLE') AS o \
                 LEFT JOIN LATERAL (SELECT l.open FROM organizer_loads l \
                                     WHERE l.campaign_id = o.campaign_id AND l.user_id = o.user_id) AS l ON true \
                 LEFT JOIN (SELECT user_id, delta FROM pending WHERE campaign_id = w.campaign_id) AS p \
                        ON p.user_id = o.user_id) AS l ON true \
         ), items AS ( \
           SELECT i.campaign_id, i.ord, i.trigger_id, i.conversation_id, NULL::bigint AS position, \
                  NULL::timestamptz AS waiting_since \
             FROM unnest($6::text[], $7::text[], $8::text[]) WITH ORDINALITY \
                  AS i(campaign_id, trigger_id, conversation_id, ord) \
           UNION ALL \
           SELECT k.campaign_id, NULL, NULL, w.conversation_id, w.position, w.waiting_since \
             FROM k CROSS JOIN LATERAL ( \
               SELECT conversation_id, position, waiting_since FROM waiting_conversations \
                WHERE campaign_id = k.campaign_id ORDER BY position LIMIT k.drain) AS w \
         ) \
         SELECT i.campaign_id AS batch_campaign, i.ord, i.trigger_id, i.position, i.waiting_since, {COLUMNS}, \
                q.found IS NOT NULL AS queue_row_found, t.outcome AS recorded_outcome, t.assignee_id AS recorded_assignee, \
                t.conversation_id AS recorded_conversation, \
                CASE WHEN f.enabled THEN ARRAY(SELECT o.user_id FROM organizers o \
                                                WHERE o.campaign_id = c.campaign_id AND o.active \
                                                  AND o.availability = 'AVAILABLE' AND {} \
                                                ORDER BY o.user_id COLLATE \"C\") \
                     ELSE '{{}}'::text[] END AS eligible, \
                f.last_assigned, f.load_users, f.load_capacities, f.load_open, f.loads_read \
         FROM (SELECT * FROM items \
                ORDER BY campaign_id COLLATE \"C\", conversation_id COLLATE \"C\", ord) AS i \
         CROSS JOIN LATERAL ( \
           SELECT * FROM conversations c WHERE c.campaign_id = i.campaign_id AND {} FOR UPDATE) AS c \
         LEFT JOIN LATERAL ( \
           SELECT true AS found FROM waiting_conversations w \
            WHERE i.ord IS NULL AND w.campaign_id = i.campaign_id AND {} FOR KEY SHARE) AS q ON true \
         CROSS JOIN LATERAL (SELECT * FROM facts WHERE facts.campaign_id = i.campaign_id) AS f \
         LEFT JOIN LATERAL ( \
           SELECT t.outcome, t.assignee_id, t.conversation_id FROM auto_assign_triggers t \
            WHERE t.campaign_id = i.campaign_id AND t.trigger_id = i.trigger_id LIMIT 1) AS t ON true",
        fold_ctes("ARRAY(SELECT campaign_id FROM wanted WHERE loads)"),
        grant_exists("o.user_id", "can_reply"),
        by_key("c", "i.conversation_id"),
        by_key("w", "i.conversation_id"),
    );
    let campaigns: Vec<&str> = parts.iter().map(|(part, _)| part.campaign_id).collect();
    let enabled: Vec<bool> = parts.iter().map(|(_, scope)| scope.enabled).collect();
    let last_assigned: Vec<bool> = parts.iter().map(|(_, scope)| scope.last_assigned).collect();
    let drain: Vec<i64> = parts.iter().map(|(_, scope)| scope.drain).collect();
    let loads_matter: Vec<bool> = parts
        .iter()
        .map(|(_, scope)| scope.default_capacity > 0 || scope.balanced)
        .collect();
    let mut item_campaigns = Vec::new();
    let mut trigger_ids = Vec::new();
    let mut conversation_ids = Vec::new();
    for (part, _) in parts {
        for trigger in part.triggers {
            item_campaigns.push(part.campaign_id);
            trigger_ids.push(trigger.trigger_id.as_str());
            conversation_ids.push(trigger.conversation_id.as_str());
        }
    }
    let rows: Vec<TriggerRow> = sqlx::query_as(&sql)
        .bind(&campaigns)
        .bind(&enabled)
        .bind(&last_assigned)
        .bind(&drain)
        .bind(&loads_matter)
        .bind(&item_campaigns)
        .bind(&trigger_ids)
        .bind(&conversation_ids)
        .fetch_all(conn)
        .await?;
    // Items are numbered across the batch: a part's triggers start after the earlier parts'.
    let mut first_ord = HashMap::new();
    let mut next = 1;
    for (part, _) in parts {
        first_ord.insert(part.campaign_id, next);
        next += part.triggers.len() as i64;
    }
    let mut by_campaign: HashMap<String, Vec<TriggerRow>> = HashMap::new();
    for mut row in rows {
        if let Some(ord) = row.ord.as_mut() {
            *ord -= first_ord
                .get(row.batch_campaign.as_str())
                .copied()
                .unwrap_or(1)
                - 1;
        }
        by_campaign
            .entry(row.batch_campaign.clone())
            .or_default()
            .push(row);
    }
    parts
        .iter()
        .map(|(part, scope)| {
            let mut rows = by_campaign.remove(part.campaign_id).unwrap_or_default();
            // Waiting conversations first, in queue order; then the triggers in batch order.
            rows.sort_by_key(|row| (row.ord.is_some(), row.position, row.ord));
            reads_from(rows, scope.default_capacity)
        })
        .collect()
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
        let queued = row.ord.is_none();
        if queued {
            reads.queue_read += 1;
            if !still_waits(row.queue_row_found, &row.conversation) {
                continue;
            }
        }
        reads.waiting_since.push(row.waiting_since);
        let (index, state, conversation) = row.into_parts()?;
        reads.waiting += usize::from(queued);
        reads.states.push(state);
        reads.indexes.push(index);
        reads.conversations.push(conversation);
    }
    Ok(reads)
}

/// Folds a campaign's pending load changes into its counts, under the auto-assign lock the caller holds;
/// for campaigns whose batches do not read loads. Returns how many changes it folded.
pub async fn fold_loads(conn: &mut Conn, campaign_id: &str) -> AppResult<u64> {
    let sql = format!(
        "WITH {} SELECT count(*) FROM folded",
        fold_ctes("ARRAY[$1::text]")
    );
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

/// One campaign's planned part of a batch: `states[i]` pairs with `plan.verdicts[i]` and `request_ids[i]`.
#[derive(Debug, Clone, Copy)]
pub struct CampaignWrite<'a> {
    pub campaign_id: &'a str,
    pub states: &'a [TriggerState],
    pub request_ids: &'a [Option<&'a str>],
    pub plan: &'a BatchPlan,
    /// The campaign's cursor before the batch.
    pub old_cursor: Option<&'a str>,
    pub waiting: WaitingAfter,
}

/// The columns of [`write_plan`]'s one statement, campaign by campaign.
#[derive(Default)]
struct WriteColumns<'a> {
    assign_campaigns: Vec<&'a str>,
    assign_conversations: Vec<&'a str>,
    assignees: Vec<&'a str>,
    assign_request_ids: Vec<Option<&'a str>>,
    record_campaigns: Vec<&'a str>,
    record_triggers: Vec<&'a str>,
    record_conversations: Vec<&'a str>,
    record_outcomes: Vec<OutcomeKind>,
    record_assignees: Vec<Option<&'a str>>,
    queued_campaigns: Vec<&'a str>,
    queued_conversations: Vec<&'a str>,
    queued_request_ids: Vec<Option<&'a str>>,
    /// One queue entry, one QUEUED event: a conversation two triggers queue is queued once, by the first.
    queued_once: HashSet<(&'a str, &'a str)>,
    moved_campaigns: Vec<&'a str>,
    moved_cursors: Vec<Option<&'a str>>,
    moved_flags: Vec<Option<bool>>,
}

impl<'a> WriteColumns<'a> {
    fn add(&mut self, part: &CampaignWrite<'a>) {
        let campaign = part.campaign_id;
        for ((state, verdict), request_id) in part
            .states
            .iter()
            .zip(&part.plan.verdicts)
            .zip(part.request_ids)
        {
            let Verdict::Decided(decision) = verdict else {
                continue;
            };
            if let Some(user) = decision.assigns() {
                self.assign_campaigns.push(campaign);
                self.assign_conversations
                    .push(state.conversation_id.as_str());
                self.assignees.push(user);
                self.assign_request_ids.push(*request_id);
            }
            let Some(trigger_id) = &state.trigger_id else {
                continue;
            };
            if !decision.duplicate {
                self.record_campaigns.push(campaign);
                self.record_triggers.push(trigger_id.as_str());
                self.record_conversations
                    .push(state.conversation_id.as_str());
                self.record_outcomes.push(decision.outcome.kind());
                self.record_assignees.push(decision.outcome.assignee());
                if decision.outcome == AutoOutcome::Queued
                    && self.queued_once.insert((campaign, &state.conversation_id))
                {
                    self.queued_campaigns.push(campaign);
                    self.queued_conversations
                        .push(state.conversation_id.as_str());
                    self.queued_request_ids.push(*request_id);
                }
            }
        }
        let cursor = part
            .plan
            .cursor
            .as_deref()
            .filter(|c| Some(*c) != part.old_cursor);
        let waiting = part.waiting;
        let flag = (waiting.has_waiting != waiting.was).then_some(waiting.has_waiting);
        if cursor.is_some() || flag.is_some() {
            self.moved_campaigns.push(campaign);
            self.moved_cursors.push(cursor);
            self.moved_flags.push(flag);
        }
    }

    fn is_empty(&self) -> bool {
        self.assign_campaigns.is_empty()
            && self.record_campaigns.is_empty()
            && self.moved_campaigns.is_empty()
    }
}

/// Writes a planned batch, every campaign's part, in one statement: assignments with their `auto` history
/// events (drained conversations leave the queue), the cursors, the trigger records, newly waiting
/// conversations (at the back of their queue, in batch order) and the campaigns' waiting flags. Rows to
/// change are found by their whole key, one lookup each, and changed by their row id, so the kept plan
/// stays bounded by the batch (see [`read_triggers`]).
///
/// It also numbers the campaigns' events for the feed, whose heads [`lock_campaigns`] locked: first the
/// events others committed unnumbered (up to `SEQUENCE_LIMIT` per campaign, in event-id order; this
/// statement began after the heads were locked, so it sees every one committed before), then its own, and
/// moves the heads. If a campaign had `SEQUENCE_LIMIT` or more unnumbered, its own events stay unnumbered
/// too, and the campaign is returned as unfinished: the sequencer numbers the rest.
pub async fn write_plan(conn: &mut Conn, parts: &[CampaignWrite<'_>]) -> AppResult<Written> {
    let mut columns = WriteColumns::default();
    for part in parts {
        columns.add(part);
    }
    let mut written = Written {
        assigned: vec![HashMap::new(); parts.len()],
        unfinished: Vec::new(),
    };
    if columns.is_empty() {
        return Ok(written);
    }
    let campaigns: Vec<&str> = parts.iter().map(|part| part.campaign_id).collect();
    // Own events are numbered per campaign in batch order: a drained conversation's LEFT_QUEUE, then its
    // ASSIGN; the QUEUED ones after the assignments.
    let backlog = backlog_ctes("$16", "$17");
    let assigned_key = by_key("k", "a.conversation_id");
    let drained_key = by_key("q", "assigned.conversation_id");
    let sql = format!(
        "WITH assigned AS ( \
           UPDATE conversations c \
              SET assignee_id = a.assignee_id, assigned_at = now(), assigned_by = NULL, \
                  version = c.version + 1, updated_at = now() \
             FROM (SELECT a.assignee_id, x.row_id \
                     FROM unnest($1::text[], $2::text[], $3::text[]) AS a(campaign_id, conversation_id, assignee_id) \
                    CROSS JOIN LATERAL (SELECT k.ctid AS row_id FROM conversations k \
                                         WHERE k.campaign_id = a.campaign_id AND {assigned_key} LIMIT 1) AS x) AS a \
            WHERE c.ctid = a.row_id AND c.assignee_id IS NULL \
           RETURNING c.campaign_id, {COLUMNS} \
         ), drained AS ( \
           DELETE FROM waiting_conversations w \
            USING assigned CROSS JOIN LATERAL ( \
                    SELECT q.ctid AS row_id FROM waiting_conversations q \
                     WHERE q.campaign_id = assigned.campaign_id AND {drained_key} LIMIT 1) AS x \
            WHERE w.ctid = x.row_id \
           RETURNING w.campaign_id, w.conversation_id \
         ), enqueued AS ( \
           INSERT INTO waiting_conversations (campaign_id, conversation_id, position) \
           SELECT q.campaign_id, q.conversation_id, nextval('waiting_position') FROM ( \
             SELECT campaign_id, conversation_id \
               FROM unnest($10::text[], $11::text[]) WITH ORDINALITY AS u(campaign_id, conversation_id, ord) \
              ORDER BY ord) AS q \
           ON CONFLICT (campaign_id, conversation_id) DO NOTHING \
           RETURNING campaign_id, conversation_id \
         ), moved AS ( \
           UPDATE inbox_settings s \
              SET last_auto_assignee_id = coalesce(m.cursor, s.last_auto_assignee_id), \
                  has_waiting = coalesce(m.flag, s.has_waiting) \
             FROM unnest($13::text[], $14::text[], $15::bool[]) AS m(campaign_id, cursor, flag) \
            WHERE s.campaign_id = ANY($13) AND s.campaign_id = m.campaign_id \
         ), recorded AS ( \
           INSERT INTO auto_assign_triggers (campaign_id, trigger_id, conversation_id, outcome, assignee_id) \
           SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) \
           ON CONFLICT (campaign_id, trigger_id) DO NOTHING \
         ), {backlog}, backlog_numbered AS ( \
           UPDATE assignment_events e SET seq = b.seq FROM backlog b WHERE e.ctid = b.row_id \
         ), starts AS MATERIALIZED ( \
           SELECT h.campaign_id, h.head, b.n AS backlog FROM heads h \
           CROSS JOIN LATERAL (SELECT count(*) AS n FROM backlog WHERE backlog.campaign_id = h.campaign_id) AS b \
         ), assignments AS MATERIALIZED ( \
           SELECT a.campaign_id, a.conversation_id, a.assignee_id, a.request_id, a.ord \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
                  WITH ORDINALITY AS a(campaign_id, conversation_id, assignee_id, request_id, ord) \
             JOIN assigned ON assigned.campaign_id = a.campaign_id \
                          AND assigned.conversation_id = a.conversation_id \
         ), own AS MATERIALIZED ( \
           SELECT a.campaign_id, a.conversation_id, 'LEFT_QUEUE' AS action, NULL::text AS to_user_id, \
                  NULL::text AS request_id, 0 AS part, a.ord, 0 AS step \
             FROM assignments a JOIN drained d ON d.campaign_id = a.campaign_id \
                                             AND d.conversation_id = a.conversation_id \
           UNION ALL \
           SELECT campaign_id, conversation_id, 'ASSIGN', assignee_id, request_id, 0, ord, 1 FROM assignments \
           UNION ALL \
           SELECT q.campaign_id, q.conversation_id, 'QUEUED', NULL, q.request_id, 1, q.ord, 0 \
             FROM unnest($10::text[], $11::text[], $12::text[]) \
                  WITH ORDINALITY AS q(campaign_id, conversation_id, request_id, ord) \
             JOIN enqueued ON enqueued.campaign_id = q.campaign_id \
                          AND enqueued.conversation_id = q.conversation_id \
         ), events AS ( \
           INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, source, request_id, seq) \
           SELECT o.campaign_id, o.conversation_id, o.action, o.to_user_id, 'AUTO', o.request_id, \
                  CASE WHEN s.backlog < $17 THEN s.head + s.backlog + row_number() OVER ( \
                    PARTITION BY o.campaign_id ORDER BY o.part, o.ord, o.step) END \
             FROM own o JOIN starts s ON s.campaign_id = o.campaign_id \
            ORDER BY o.campaign_id, o.part, o.ord, o.step \
         ), counts AS MATERIALIZED ( \
           SELECT s.campaign_id, s.head, s.backlog >= $17 AS unfinished, \
                  s.head + s.backlog + CASE WHEN s.backlog < $17 THEN o.n ELSE 0 END AS new_head \
             FROM starts s \
            CROSS JOIN LATERAL (SELECT count(*) AS n FROM own WHERE own.campaign_id = s.campaign_id) AS o \
         ), moved_heads AS ( \
           UPDATE feed_heads f SET last_seq = c.new_head FROM counts c \
            WHERE f.campaign_id = ANY($16) AND f.campaign_id = c.campaign_id AND c.new_head > c.head \
         ), notified AS MATERIALIZED ( \
           SELECT pg_notify($18, current_schema() || '/' || campaign_id) FROM counts WHERE new_head > head \
         ) \
         SELECT c.campaign_id AS batch_campaign, c.unfinished, a.* \
           FROM counts c LEFT JOIN assigned a ON a.campaign_id = c.campaign_id \
          WHERE (SELECT count(*) FROM notified) >= 0"
    );
    let rows: Vec<PgRow> = sqlx::query(&sql)
        .bind(&columns.assign_campaigns)
        .bind(&columns.assign_conversations)
        .bind(&columns.assignees)
        .bind(&columns.assign_request_ids)
        .bind(&columns.record_campaigns)
        .bind(&columns.record_triggers)
        .bind(&columns.record_conversations)
        .bind(&columns.record_outcomes)
        .bind(&columns.record_assignees)
        .bind(&columns.queued_campaigns)
        .bind(&columns.queued_conversations)
        .bind(&columns.queued_request_ids)
        .bind(&columns.moved_campaigns)
        .bind(&columns.moved_cursors)
        .bind(&columns.moved_flags)
        .bind(&campaigns)
        .bind(SEQUENCE_LIMIT as i64)
        .bind(FEED_CHANNEL)
        .fetch_all(conn)
        .await?;
    let index: HashMap<&str, usize> = campaigns.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    for row in rows {
        let campaign: String = row.try_get("batch_campaign")?;
        let Some(&i) = index.get(campaign.as_str()) else {
            continue;
        };
        if row.try_get("unfinished")? && !written.unfinished.contains(&campaign) {
            written.unfinished.push(campaign.clone());
        }
        // A campaign that assigned nothing comes as one row without a conversation.
        if row
            .try_get::<Option<String>, _>("conversation_id")?
            .is_some()
        {
            let conversation = Conversation::from_row(&row)?;
            written.assigned[i].insert(conversation.conversation_id.clone(), conversation);
        }
    }
    Ok(written)
}

/// What [`write_plan`] did.
#[derive(Debug)]
pub struct Written {
    /// The conversations it assigned, by id, one map per part, in order.
    pub assigned: Vec<HashMap<String, Conversation>>,
    /// Campaigns with more unnumbered events than one write numbers: the sequencer numbers the rest.
    pub unfinished: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct TriggerRow {
    batch_campaign: String,
    /// `None` for a waiting conversation.
    ord: Option<i64>,
    trigger_id: Option<String>,
    position: Option<i64>,
    waiting_since: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    conversation: Conversation,
    /// A waiting conversation's queue row, locked after the conversation: still there.
    queue_row_found: bool,
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
