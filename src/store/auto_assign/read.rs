//! The read stage: a batch's entries and organizers locked, and everything it decides on read in one
//! statement (again, if a commit slipped in between its snapshot and its locks), with the feed numbers of
//! what that snapshot saw.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use super::loads::fold_ctes;
use super::lock::CampaignTriggers;
use crate::domain::auto_assign::{
    AutoOutcome, Load, OutcomeKind, RecordedTrigger, TriggerState, effective_capacity, still_waits,
};
use crate::domain::holders::Unreachable;
use crate::domain::model::{Availability, Conversation};
use crate::error::{AppError, AppResult};
use crate::store::conversations::COLUMNS_WITHOUT_DUE;
use crate::store::feed::{backlog_ctes, last_assigned};
use crate::store::rules::{eligible, unreachable_cause};
use crate::store::{Conn, by_key, by_row_id};

/// What a batch reads for one campaign besides its triggers' conversations.
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

/// Where a batch entry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySource {
    /// The trigger at `index` of its campaign's part.
    Trigger { index: usize },
    /// A waiting conversation being drained, waiting since then.
    Waiting { since: DateTime<Utc> },
}

/// One entry of a batch as read under its locks: a trigger's or a waiting conversation's.
#[derive(Debug, Clone)]
pub struct Entry {
    pub source: EntrySource,
    pub state: TriggerState,
    pub conversation: Conversation,
}

impl Borrow<TriggerState> for Entry {
    fn borrow(&self) -> &TriggerState {
        &self.state
    }
}

/// What a batch read for one campaign.
#[derive(Debug, Clone, Default)]
pub struct CampaignReads {
    /// The waiting conversations it drains (queue order), then its triggers whose conversation exists (batch
    /// order).
    pub entries: Vec<Entry>,
    /// How many waiting conversations were locked (at most the limit asked for): also those that had left
    /// the queue by the time they were locked, which are not drained.
    pub queue_read: usize,
    /// The organizer assigned last by any path, in feed order.
    pub last_assigned: Option<String>,
    /// The loads of the campaign's active, available organizers, when capacity or balance is in play.
    pub loads: Option<HashMap<String, Load>>,
    /// The read numbered events committed before it: the campaign's feed head moved (watchers are told at
    /// commit).
    pub head_moved: bool,
}

impl CampaignReads {
    /// How many waiting conversations it drains (they come first).
    pub fn waiting(&self) -> usize {
        self.entries
            .iter()
            .take_while(|e| matches!(e.source, EntrySource::Waiting { .. }))
            .count()
    }
}

static READ_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        include_str!("sql/read_batch.sql"),
        fold = fold_ctes("ARRAY(SELECT campaign_id FROM wanted WHERE loads)"),
        backlog = backlog_ctes("$1", "NULL"),
        last_assigned = last_assigned("w.campaign_id"),
        conversation_columns = COLUMNS_WITHOUT_DUE,
        eligible = eligible("o", "c"),
        holder_cause = unreachable_cause("h", "c"),
        snapshot_by_key = by_key("s", "e.conversation_id"),
        event_by_row_id = by_row_id("e", "b.campaign_id", "b.row_id"),
        conversation_by_key = by_key("c", "e.conversation_id"),
        queue_row_by_key = by_key("w", "e.conversation_id"),
    )
});

/// Reads a batch under the campaigns' locks (see `lock_campaigns`, which must have locked their feed heads).
/// In one statement: locks its entries (the triggers' conversations and each campaign's first `drain`
/// waiting ones, in one order), then share-locks the campaigns' organizers, and reads each entry with its
/// trigger record and, when its campaign's auto-assignment is on, its eligible organizers; the loads
/// (folding the pending changes) and the last organizer assigned where they matter. It numbers the
/// campaigns' events committed unnumbered, everything the read saw, so they come before the batch's own in
/// the feed. If a commit changed a row between the statement's snapshot and its lock, it reads again, the
/// same entries, holding every lock: what a batch decides on is what one snapshot shows, after its locks.
/// Returns each campaign's [`CampaignReads`], by campaign id; triggers whose conversation does not exist are
/// left out, and so are waiting conversations that left the queue before they were locked (see
/// [`still_waits`]).
pub async fn read_batch(
    conn: &mut Conn,
    parts: &[(CampaignTriggers<'_>, BatchReads)],
) -> AppResult<HashMap<String, CampaignReads>> {
    let mut rows = read_rows(conn, &ReadColumns::new(parts, None)).await?;
    let mut moved: HashSet<String> = moved_heads(&rows);
    if rows.iter().any(|row| row.changed) {
        // The same entries again (the waiting ones by name, not from the queue's head): all locked now.
        let waiting: Vec<(String, String)> =
            rows.iter().filter_map(|row| row.waiting_entry()).collect();
        rows = read_rows(conn, &ReadColumns::new(parts, Some(&waiting))).await?;
        moved.extend(moved_heads(&rows));
    }
    let mut by_campaign: HashMap<String, Vec<PgRow>> = HashMap::new();
    for row in rows {
        by_campaign
            .entry(row.campaign_id)
            .or_default()
            .push(row.row);
    }
    parts
        .iter()
        .map(|(part, reads)| {
            let rows = by_campaign.remove(part.campaign_id).unwrap_or_default();
            let mut read = campaign_reads(rows, reads.default_capacity)?;
            read.head_moved = moved.contains(part.campaign_id);
            Ok((part.campaign_id.to_owned(), read))
        })
        .collect()
}

/// The campaigns whose feed heads a read moved.
fn moved_heads(rows: &[ReadRow]) -> HashSet<String> {
    rows.iter()
        .filter(|row| row.head_moved)
        .map(|row| row.campaign_id.clone())
        .collect()
}

/// One row of the read: a campaign's, with or without an entry.
struct ReadRow {
    campaign_id: String,
    /// A row the read locked had changed since its snapshot (the same on every row).
    changed: bool,
    /// The read numbered events of the campaign (the same on each of its rows).
    head_moved: bool,
    row: PgRow,
}

impl ReadRow {
    /// `(campaign, conversation)` if the row is a waiting conversation's.
    fn waiting_entry(&self) -> Option<(String, String)> {
        let ord: Option<i64> = self.row.try_get("ord").ok()?;
        let conversation: Option<String> = self.row.try_get("conversation_id").ok()?;
        match (ord, conversation) {
            (None, Some(conversation)) => Some((self.campaign_id.clone(), conversation)),
            _ => None,
        }
    }
}

async fn read_rows(conn: &mut Conn, columns: &ReadColumns<'_>) -> AppResult<Vec<ReadRow>> {
    let rows: Vec<PgRow> = sqlx::query(&READ_BATCH)
        .bind(&columns.campaigns) // $1 campaign_ids
        .bind(&columns.enabled) // $2 enabled
        .bind(&columns.wants_last_assigned) // $3 wants_last_assigned
        .bind(&columns.loads_matter) // $4 loads_matter
        .bind(&columns.drain_limits) // $5 drain_limits
        .bind(&columns.trigger_campaigns) // $6 trigger_campaigns
        .bind(&columns.trigger_ords) // $7 trigger_ords
        .bind(&columns.trigger_ids) // $8 trigger_ids
        .bind(&columns.trigger_conversations) // $9 trigger_conversations
        .bind(&columns.waiting_campaigns) // $10 waiting_campaigns
        .bind(&columns.waiting_conversations) // $11 waiting_conversations
        .fetch_all(conn)
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(ReadRow {
                campaign_id: row.try_get("batch_campaign")?,
                changed: row.try_get("changed")?,
                head_moved: row.try_get("head_moved")?,
                row,
            })
        })
        .collect()
}

/// The read statement's columns, built from the parts: the waiting conversations are read from the head of
/// each queue, or, to read again, named.
#[derive(Default)]
struct ReadColumns<'a> {
    campaigns: Vec<&'a str>,
    enabled: Vec<bool>,
    wants_last_assigned: Vec<bool>,
    loads_matter: Vec<bool>,
    drain_limits: Vec<i64>,
    trigger_campaigns: Vec<&'a str>,
    trigger_ords: Vec<i64>,
    trigger_ids: Vec<&'a str>,
    trigger_conversations: Vec<&'a str>,
    waiting_campaigns: Vec<&'a str>,
    waiting_conversations: Vec<&'a str>,
}

impl<'a> ReadColumns<'a> {
    fn new(
        parts: &[(CampaignTriggers<'a>, BatchReads)],
        waiting: Option<&'a [(String, String)]>,
    ) -> Self {
        let mut columns = ReadColumns::default();
        for (part, reads) in parts {
            columns.campaigns.push(part.campaign_id);
            columns.enabled.push(reads.enabled);
            columns.wants_last_assigned.push(reads.last_assigned);
            columns
                .loads_matter
                .push(reads.default_capacity > 0 || reads.balanced);
            columns
                .drain_limits
                .push(if waiting.is_some() { 0 } else { reads.drain });
            for (index, trigger) in part.triggers.iter().enumerate() {
                columns.trigger_campaigns.push(part.campaign_id);
                columns.trigger_ords.push(index as i64);
                columns.trigger_ids.push(&trigger.trigger_id);
                columns.trigger_conversations.push(&trigger.conversation_id);
            }
        }
        for (campaign_id, conversation_id) in waiting.unwrap_or_default() {
            columns.waiting_campaigns.push(campaign_id);
            columns.waiting_conversations.push(conversation_id);
        }
        columns
    }
}

/// One campaign's rows: its facts (on every row) and its entries, waiting conversations first in queue
/// order, then triggers in batch order.
fn campaign_reads(rows: Vec<PgRow>, default_capacity: i32) -> AppResult<CampaignReads> {
    let mut reads = CampaignReads::default();
    if let Some(row) = rows.first() {
        reads.last_assigned = row.try_get("last_assigned")?;
        if row.try_get("loads_read")? {
            reads.loads = Some(loads(row, default_capacity)?);
        }
    }
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        // A campaign without entries comes as one row without a conversation.
        if row
            .try_get::<Option<String>, _>("conversation_id")?
            .is_some()
        {
            entries.push(EntryRow::from_row(row)?);
        }
    }
    reads.queue_read = entries.iter().filter(|row| row.ord.is_none()).count();
    entries.sort_by_key(|row| (row.ord.is_some(), row.position, row.ord));
    for row in entries {
        if row.ord.is_none() && !still_waits(row.queue_row_found, &row.conversation) {
            continue;
        }
        reads.entries.push(row.into_entry()?);
    }
    Ok(reads)
}

/// The loads of a campaign's active, available organizers, as its facts carry them.
fn loads(row: &PgRow, default_capacity: i32) -> AppResult<HashMap<String, Load>> {
    let users: Option<Vec<String>> = row.try_get("load_users")?;
    let capacities: Option<Vec<Option<i32>>> = row.try_get("load_capacities")?;
    let open: Option<Vec<i64>> = row.try_get("load_open")?;
    let loads = users
        .into_iter()
        .flatten()
        .zip(capacities.into_iter().flatten())
        .zip(open.into_iter().flatten())
        .map(|((user_id, capacity), open)| {
            let load = Load {
                open: u32::try_from(open).unwrap_or(0),
                capacity: effective_capacity(capacity, default_capacity),
            };
            (user_id, load)
        });
    Ok(loads.collect())
}

/// One entry as read.
#[derive(sqlx::FromRow)]
struct EntryRow {
    /// The trigger's place in its part; `None` for a waiting conversation.
    ord: Option<i64>,
    trigger_id: Option<String>,
    position: Option<i64>,
    waiting_since: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    conversation: Conversation,
    /// A waiting conversation's queue row is still there.
    queue_row_found: bool,
    recorded_outcome: Option<OutcomeKind>,
    recorded_assignee: Option<String>,
    recorded_conversation: Option<String>,
    eligible: Vec<String>,
    /// Why its holder cannot answer it (`store::rules::unreachable_cause`), if they cannot.
    holder_cause: Option<String>,
    /// Its holder's availability.
    holder_availability: Option<Availability>,
}

impl EntryRow {
    fn into_entry(self) -> AppResult<Entry> {
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
        let source = match (self.ord, self.waiting_since) {
            (Some(ord), _) => EntrySource::Trigger {
                index: usize::try_from(ord).unwrap_or_default(),
            },
            (None, since) => EntrySource::Waiting {
                since: since.unwrap_or_else(Utc::now),
            },
        };
        let state = TriggerState {
            trigger_id: self.trigger_id,
            conversation_id: self.conversation.conversation_id.clone(),
            current_assignee: self.conversation.assignee_id.clone(),
            recorded,
            eligible: self.eligible,
            lapsed_by: self.conversation.lapsed_by.clone(),
            holder_unreachable: self
                .holder_cause
                .as_deref()
                .and_then(Unreachable::from_cause),
            holder_availability: self.holder_availability,
        };
        Ok(Entry {
            source,
            state,
            conversation: self.conversation,
        })
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
