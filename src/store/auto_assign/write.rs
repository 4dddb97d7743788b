//! The write stage: a planned batch, every campaign's part, in one statement, with its own feed numbers.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use super::read::{Entry, EntrySource};
use crate::domain::auto_assign::{AutoOutcome, BatchPlan, OutcomeKind, Priority, Trigger, Verdict};
use crate::domain::model::{Conversation, ConversationStatus};
use crate::error::AppResult;
use crate::store::conversations::COLUMNS_WITHOUT_DUE;
use crate::store::rules::{
    Event, advance_queue_clock, first_arrival, leave_queue, open_holder, queue_key,
    record_load_changes,
};
use crate::store::{Conn, by_key, by_row_id, row_by_key};

/// What a campaign's part wrote: the conversations it changed (assigned, or whose wait for a reply it
/// started), by id, as they are after the write, and which of them it assigned.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub conversations: HashMap<String, Conversation>,
    pub assigned: HashSet<String>,
    /// The batch numbered events of the campaign: its feed head moved (watchers are told at commit).
    pub head_moved: bool,
}

/// Where a batch leaves the waiting queue: `has_waiting` for the campaign's flag after the batch.
#[derive(Debug, Clone, Copy)]
pub struct WaitingAfter {
    pub was: bool,
    pub has_waiting: bool,
}

/// One campaign's planned part of a batch.
#[derive(Debug, Clone, Copy)]
pub struct CampaignWrite<'a> {
    pub campaign_id: &'a str,
    /// The part's triggers, as its entries' sources index them.
    pub triggers: &'a [Trigger],
    pub plan: &'a BatchPlan<Entry>,
    /// The campaign's cursor before the batch.
    pub old_cursor: Option<&'a str>,
    pub waiting: WaitingAfter,
    /// How many seconds of waiting a priority level is worth (the campaign's setting).
    pub priority_step_seconds: i32,
}

impl<'a> CampaignWrite<'a> {
    /// The request id of the trigger an entry came from.
    fn request_id(&self, entry: &Entry) -> Option<&'a str> {
        match entry.source {
            EntrySource::Trigger { index } => self.triggers.get(index)?.request_id.as_deref(),
            EntrySource::Waiting { .. } => None,
        }
    }

    /// The priority an entry queues with: its trigger's.
    fn priority(&self, entry: &Entry) -> Priority {
        match entry.source {
            EntrySource::Trigger { index } => self
                .triggers
                .get(index)
                .map(|t| t.priority)
                .unwrap_or_default(),
            EntrySource::Waiting { .. } => Priority::default(),
        }
    }
}

static WRITE_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        include_str!("sql/write_batch.sql"),
        assigned_by_key = row_by_key(
            "conversations",
            "k",
            "a.campaign_id",
            "a.conversation_id",
            "",
            "x"
        ),
        assigned_by_row_id = by_row_id("c", "a.campaign_id", "a.row_id"),
        waiting_by_key = by_key("w", "u.conversation_id"),
        leave_queue = leave_queue("assigned", "true", ", assigned.change_ord AS ord"),
        insert_events = own_events().insert(
            "FROM own o JOIN heads h ON h.campaign_id = o.campaign_id \
             ORDER BY o.campaign_id, o.part, o.ord, o.step"
        ),
        conversation_columns = COLUMNS_WITHOUT_DUE,
        queue_key = queue_key("q.arrival", "q.head_start"),
        advance_queue_clock = advance_queue_clock("s", "m.queued"),
        first_arrival = first_arrival("s", "m.queued"),
        record_loads = record_load_changes(&format!(
            "SELECT campaign_id, NULL::text, {} FROM assigned",
            open_holder("status", "assignee_id")
        )),
    )
});

/// The batch's own events (`own o`), numbered in order right after their campaign's head (`heads h`).
fn own_events() -> Event<'static> {
    Event {
        conversation_id: "o.conversation_id",
        to_user_id: "o.to_user_id",
        seq: "h.head + row_number() OVER (PARTITION BY o.campaign_id ORDER BY o.part, o.ord, o.step)",
        priority: "o.priority",
        ..Event::of(
            "o.campaign_id",
            "o.action",
            "NULL",
            "'AUTO'",
            "o.request_id",
        )
    }
}

/// Writes a planned batch in one statement: assignments with their `auto` history events (drained
/// conversations leave the queue), the waits for a reply the triggers' messages start, the cursors, the
/// trigger records, newly waiting conversations (at the back of their queue, in plan order) and the
/// campaigns' waiting flags; numbers the batch's own events after the heads its read moved, and moves
/// them. Returns what each campaign's part wrote.
pub async fn write_batch(
    conn: &mut Conn,
    parts: &[CampaignWrite<'_>],
) -> AppResult<HashMap<String, Written>> {
    let mut columns = WriteColumns::default();
    for part in parts {
        columns.add(part);
    }
    let mut written: HashMap<String, Written> = parts
        .iter()
        .map(|part| (part.campaign_id.to_owned(), Written::default()))
        .collect();
    if columns.is_empty() {
        return Ok(written);
    }
    let campaigns: Vec<&str> = parts.iter().map(|part| part.campaign_id).collect();
    let rows: Vec<PgRow> = sqlx::query(&WRITE_BATCH)
        .bind(&columns.change_campaigns) // $1 change_campaigns
        .bind(&columns.change_conversations) // $2 change_conversations
        .bind(&columns.assignees) // $3 assignees
        .bind(&columns.change_request_ids) // $4 change_request_ids
        .bind(&columns.record_campaigns) // $5 record_campaigns
        .bind(&columns.record_triggers) // $6 record_trigger_ids
        .bind(&columns.record_conversations) // $7 record_conversations
        .bind(&columns.record_outcomes) // $8 record_outcomes
        .bind(&columns.record_assignees) // $9 record_assignees
        .bind(&columns.queued_campaigns) // $10 queued_campaigns
        .bind(&columns.queued_conversations) // $11 queued_conversations
        .bind(&columns.queued_request_ids) // $12 queued_request_ids
        .bind(&columns.moved_campaigns) // $13 moved_campaigns
        .bind(&columns.moved_cursors) // $14 moved_cursors
        .bind(&columns.moved_flags) // $15 moved_flags
        .bind(&campaigns) // $16 campaign_ids
        .bind(&columns.starts_wait) // $17 starts_wait
        .bind(&columns.queued_priorities) // $18 queued_priorities
        .bind(&columns.queued_head_starts) // $19 queued_head_starts
        .bind(&columns.moved_queued) // $20 moved_queued
        .fetch_all(conn)
        .await?;
    for row in rows {
        let campaign: String = row.try_get("batch_campaign")?;
        let Some(part) = written.get_mut(&campaign) else {
            continue;
        };
        part.head_moved |= row.try_get::<bool, _>("head_moved")?;
        // A campaign that changed nothing comes as one row without a conversation.
        if row
            .try_get::<Option<String>, _>("conversation_id")?
            .is_some()
        {
            let conversation = Conversation::from_row(&row)?;
            if row.try_get("assigned_now")? {
                part.assigned.insert(conversation.conversation_id.clone());
            }
            part.conversations
                .insert(conversation.conversation_id.clone(), conversation);
        }
    }
    Ok(written)
}

/// The columns of [`write_batch`]'s statement, built from the planned entries, campaign by campaign.
#[derive(Default)]
struct WriteColumns<'a> {
    change_campaigns: Vec<&'a str>,
    change_conversations: Vec<&'a str>,
    assignees: Vec<Option<&'a str>>,
    change_request_ids: Vec<Option<&'a str>>,
    starts_wait: Vec<bool>,
    /// One row per conversation changed: its place in the columns above.
    changed_once: HashMap<(&'a str, &'a str), usize>,
    record_campaigns: Vec<&'a str>,
    record_triggers: Vec<&'a str>,
    record_conversations: Vec<&'a str>,
    record_outcomes: Vec<OutcomeKind>,
    record_assignees: Vec<Option<&'a str>>,
    queued_campaigns: Vec<&'a str>,
    queued_conversations: Vec<&'a str>,
    queued_request_ids: Vec<Option<&'a str>>,
    queued_priorities: Vec<Priority>,
    queued_head_starts: Vec<i64>,
    /// One queue entry, one QUEUED event: a conversation two triggers queue is queued once, by the first.
    queued_once: HashSet<(&'a str, &'a str)>,
    moved_campaigns: Vec<&'a str>,
    moved_cursors: Vec<Option<&'a str>>,
    moved_flags: Vec<Option<bool>>,
    moved_queued: Vec<i32>,
}

impl<'a> WriteColumns<'a> {
    fn add(&mut self, part: &CampaignWrite<'a>) {
        let campaign = part.campaign_id;
        let queued_before = self.queued_campaigns.len();
        for planned in &part.plan.entries {
            let Verdict::Decided(decision) = &planned.verdict else {
                continue;
            };
            let state = &planned.entry.state;
            let request_id = part.request_id(&planned.entry);
            if let Some(user) = decision.assigns() {
                *self.change(campaign, &state.conversation_id, request_id).0 = Some(user);
            }
            let (Some(trigger_id), false) = (&state.trigger_id, decision.duplicate) else {
                continue;
            };
            // A member's message, delivered for the first time, to an open conversation that waits for
            // nothing yet: it starts the wait for a reply.
            let conversation = &planned.entry.conversation;
            if conversation.status == ConversationStatus::Open
                && conversation.awaiting_reply_since.is_none()
            {
                *self.change(campaign, &state.conversation_id, request_id).1 = true;
            }
            self.record_campaigns.push(campaign);
            self.record_triggers.push(trigger_id);
            self.record_conversations.push(&state.conversation_id);
            self.record_outcomes.push(decision.outcome.kind());
            self.record_assignees.push(decision.outcome.assignee());
            if decision.outcome == AutoOutcome::Queued
                && self.queued_once.insert((campaign, &state.conversation_id))
            {
                self.queued_campaigns.push(campaign);
                self.queued_conversations.push(&state.conversation_id);
                self.queued_request_ids.push(request_id);
                let priority = part.priority(&planned.entry);
                self.queued_priorities.push(priority);
                self.queued_head_starts
                    .push(priority.head_start_micros(part.priority_step_seconds));
            }
        }
        let cursor = part
            .plan
            .cursor
            .as_deref()
            .filter(|c| Some(*c) != part.old_cursor);
        let waiting = part.waiting;
        let flag = (waiting.has_waiting != waiting.was).then_some(waiting.has_waiting);
        let queued = self.queued_campaigns.len() - queued_before;
        if cursor.is_some() || flag.is_some() || queued > 0 {
            self.moved_campaigns.push(campaign);
            self.moved_cursors.push(cursor);
            self.moved_flags.push(flag);
            self.moved_queued
                .push(i32::try_from(queued).expect("a batch queues fewer than 2^31"));
        }
    }

    /// The row of a conversation the batch changes (added at its first change): its new assignee and
    /// whether its wait starts.
    fn change(
        &mut self,
        campaign: &'a str,
        conversation: &'a str,
        request_id: Option<&'a str>,
    ) -> (&mut Option<&'a str>, &mut bool) {
        let index = *self
            .changed_once
            .entry((campaign, conversation))
            .or_insert_with(|| {
                self.change_campaigns.push(campaign);
                self.change_conversations.push(conversation);
                self.assignees.push(None);
                self.change_request_ids.push(request_id);
                self.starts_wait.push(false);
                self.change_campaigns.len() - 1
            });
        (&mut self.assignees[index], &mut self.starts_wait[index])
    }

    fn is_empty(&self) -> bool {
        self.change_campaigns.is_empty()
            && self.record_campaigns.is_empty()
            && self.moved_campaigns.is_empty()
    }
}
