//! One auto-assign batch, stage by stage: lock the campaigns, read (entries locked, then read fresh), plan
//! (pure rules), write, answer. Each campaign's part is decided exactly as if it were a batch of its own.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tracing::Instrument;

use super::AutoAssigned;
use crate::domain::auto_assign::{
    AutoOutcome, BatchPlan, Decision, RotationStart, Routing, RoutingMode, Trigger, TriggerState,
    Verdict, plan_batch,
};
use crate::domain::holders::{Unreachable, absent};
use crate::domain::model::Conversation;
use crate::domain::replies::{ReplySettings, reply_due_at};
use crate::error::{AppError, AppResult, Reason};
use crate::observability::{
    AUTO_ASSIGN_BATCH, LOCK_WAIT_SECONDS, WAITING_DRAINED, WAITING_SECONDS,
};
use crate::service::shifts;
use crate::store::auto_assign::{
    self, BatchReads, CampaignReads, CampaignTriggers, CampaignWrite, Entry, EntrySource,
    LockedSettings, WaitingAfter, Written,
};
use crate::store::notices::Notice;
use crate::store::{self, Conn, Store};

/// Most waiting conversations one batch tries to place; a longer queue drains over several batches, back
/// to back (not one per event or sweep).
const DRAIN_LIMIT: i64 = 256;

/// One campaign's triggers in a batch (none: the batch only drains its waiting conversations).
#[derive(Debug, Clone)]
pub struct CampaignBatch {
    pub campaign_id: String,
    pub triggers: Vec<Trigger>,
}

/// What a batch did for one campaign: each trigger's answer, in order, and whether to drain again (the
/// batch read as many waiting conversations as it may and placed some, so more may wait that someone can
/// take).
#[derive(Debug)]
pub struct CampaignOutcome {
    pub replies: Vec<AppResult<AutoAssigned>>,
    pub drain_again: bool,
}

/// Decides a batch of triggers of one or several campaigns in one transaction: lock, read, plan, write,
/// answer. Returns one outcome per part, in order.
pub async fn run_batch(store: &Store, parts: &[CampaignBatch]) -> AppResult<Vec<CampaignOutcome>> {
    let transaction = tracing::info_span!("db.transaction", lock_wait_ms = tracing::field::Empty);
    async {
        // Read once per process, before any transaction holds a connection.
        let schema = store.schema().await?;
        let mut tx = store.begin_keyed().await?;
        let locked = lock(&mut tx, parts).await?;
        let read = read(&mut tx, locked).await?;
        let planned: Vec<PlannedPart> = read.into_iter().map(plan).collect();
        let written = write(&mut tx, planned).await?;
        let notices: Vec<Notice> = written.iter().filter_map(WrittenPart::notice).collect();
        store::notices::commit_notifying(tx, schema, &notices).await?;
        Ok(written.into_iter().map(answer).collect())
    }
    .instrument(transaction)
    .await
}

/// One campaign's part, locked: its settings, and what its batch reads by them.
struct LockedPart<'a> {
    batch: &'a CampaignBatch,
    settings: LockedSettings,
    reads: BatchReads,
    /// Organizers off shift now, by their schedules (read under the lock; see `service::shifts`).
    off_shift: HashSet<String>,
}

/// Lock stage: creates the conversations the triggers bring, then takes the campaigns' auto-assign locks
/// (in a fixed order) and their feed heads, so the batch numbers its campaigns' events itself.
async fn lock<'a>(tx: &mut Conn, parts: &'a [CampaignBatch]) -> AppResult<Vec<LockedPart<'a>>> {
    let waiting = Instant::now();
    let ids: Vec<&str> = parts.iter().map(|part| part.campaign_id.as_str()).collect();
    let mut locked = auto_assign::lock_campaigns(tx, &ids, &triggers_of(parts), true).await?;
    let lock_wait = waiting.elapsed().as_secs_f64();
    metrics::histogram!(LOCK_WAIT_SECONDS).record(lock_wait);
    tracing::Span::current().record("lock_wait_ms", lock_wait * 1e3);
    let size: usize = parts.iter().map(|part| part.triggers.len()).sum();
    metrics::histogram!(AUTO_ASSIGN_BATCH).record(size as f64);
    let mut locked_parts = Vec::with_capacity(parts.len());
    for batch in parts {
        let settings = locked
            .remove(&batch.campaign_id)
            .ok_or_else(|| unlocked(&batch.campaign_id))?;
        let reads = batch_reads(&settings);
        // Shift starts and ends not recorded yet are, before the read numbers what it saw: the feed has
        // them ahead of the decisions that rely on them.
        let off_shift = shifts::record_passed(tx, &batch.campaign_id, &settings).await?;
        locked_parts.push(LockedPart {
            batch,
            settings,
            reads,
            off_shift,
        });
    }
    Ok(locked_parts)
}

fn triggers_of(parts: &[CampaignBatch]) -> Vec<CampaignTriggers<'_>> {
    parts.iter().map(CampaignBatch::triggers).collect()
}

impl CampaignBatch {
    fn triggers(&self) -> CampaignTriggers<'_> {
        CampaignTriggers {
            campaign_id: &self.campaign_id,
            triggers: &self.triggers,
        }
    }
}

/// What a campaign's batch reads, by its settings: the waiting conversations it drains first (if any may
/// wait and auto-assignment is on), and loads where capacity or balance is in play.
fn batch_reads(settings: &LockedSettings) -> BatchReads {
    BatchReads {
        enabled: settings.auto_assign_enabled,
        last_assigned: settings.rotation_start == RotationStart::LastAssigned,
        drain: if settings.auto_assign_enabled && settings.has_waiting {
            DRAIN_LIMIT
        } else {
            0
        },
        default_capacity: settings.default_capacity,
        balanced: settings.routing_mode == RoutingMode::Balanced,
    }
}

/// One campaign's part, read.
struct ReadPart<'a> {
    locked: LockedPart<'a>,
    reads: CampaignReads,
}

/// Read stage: locks each part's entries and reads what it decides on, fresh (see `read_batch`).
async fn read<'a>(tx: &mut Conn, locked: Vec<LockedPart<'a>>) -> AppResult<Vec<ReadPart<'a>>> {
    let to_read: Vec<(CampaignTriggers, BatchReads)> = locked
        .iter()
        .map(|part| (part.batch.triggers(), part.reads))
        .collect();
    let mut reads = auto_assign::read_batch(tx, &to_read).await?;
    Ok(locked
        .into_iter()
        .map(|locked| ReadPart {
            reads: reads.remove(&locked.batch.campaign_id).unwrap_or_default(),
            locked,
        })
        .collect())
}

/// One campaign's part, planned.
struct PlannedPart<'a> {
    batch: &'a CampaignBatch,
    settings: LockedSettings,
    /// Organizers off shift at the decision.
    off_shift: HashSet<String>,
    drain: i64,
    queue_read: usize,
    plan: BatchPlan<Entry>,
    /// The read numbered events committed before it (see `CampaignReads::head_moved`).
    head_moved: bool,
}

/// Plan stage: the pure rules decide each entry in order.
fn plan(read: ReadPart) -> PlannedPart {
    let ReadPart { locked, mut reads } = read;
    let settings = locked.settings;
    let start = match settings.rotation_start {
        RotationStart::LastAssigned => reads.last_assigned.as_deref(),
        RotationStart::LastAutoAssigned => settings.last_auto_assignee_id.as_deref(),
    };
    let routing = Routing {
        mode: settings.routing_mode,
        loads: reads.loads.take(),
        off_shift: locked.off_shift.clone(),
    };
    let plan = plan_batch(
        settings.auto_assign_enabled,
        start,
        routing,
        std::mem::take(&mut reads.entries),
    );
    PlannedPart {
        batch: locked.batch,
        drain: locked.reads.drain,
        off_shift: locked.off_shift,
        queue_read: reads.queue_read,
        head_moved: reads.head_moved,
        settings,
        plan,
    }
}

/// One campaign's part, written: the conversations it changed, and where its queued triggers wait.
struct WrittenPart<'a> {
    planned: PlannedPart<'a>,
    written: Written,
    positions: HashMap<String, i64>,
}

impl WrittenPart<'_> {
    /// What every replica is told at commit: the campaign's head moved (its events may start reply timers
    /// too), or else the waits for a reply it started, which no event records.
    fn notice(&self) -> Option<Notice<'_>> {
        let campaign_id = self.planned.batch.campaign_id.as_str();
        if self.planned.head_moved || self.written.head_moved {
            Some(Notice::HeadMoved(campaign_id))
        } else if !self.written.conversations.is_empty() {
            Some(Notice::TimedWorkChanged(campaign_id))
        } else {
            None
        }
    }
}

/// Write stage: every part in one statement, then the queue positions of what it queued.
async fn write<'a>(
    tx: &mut Conn,
    planned: Vec<PlannedPart<'a>>,
) -> AppResult<Vec<WrittenPart<'a>>> {
    let writes: Vec<CampaignWrite> = planned
        .iter()
        .map(|part| CampaignWrite {
            campaign_id: &part.batch.campaign_id,
            triggers: &part.batch.triggers,
            plan: &part.plan,
            old_cursor: part.settings.last_auto_assignee_id.as_deref(),
            waiting: waiting_after(part),
            priority_step_seconds: part.settings.priority_step_seconds,
        })
        .collect();
    let mut written_parts = auto_assign::write_batch(tx, &writes).await?;
    let mut written = Vec::with_capacity(planned.len());
    for part in planned {
        let positions = queue_positions(tx, &part).await?;
        written.push(WrittenPart {
            written: written_parts
                .remove(&part.batch.campaign_id)
                .unwrap_or_default(),
            positions,
            planned: part,
        });
    }
    Ok(written)
}

/// Whether conversations may still wait after the batch: some were queued by it, or it read as many as it
/// may and more may follow.
fn waiting_after(part: &PlannedPart) -> WaitingAfter {
    let was = part.settings.has_waiting;
    let queued = part.plan.any_queued();
    let has_waiting = if part.drain == 0 {
        // Not drained (auto-assignment off, or nothing waits): the flag keeps its meaning.
        was || queued
    } else {
        queued || part.queue_read as i64 == part.drain
    };
    WaitingAfter { was, has_waiting }
}

/// Where the part's queued triggers wait (1 = next), read in the batch's transaction.
async fn queue_positions(tx: &mut Conn, part: &PlannedPart<'_>) -> AppResult<HashMap<String, i64>> {
    let queued: Vec<&str> = part
        .plan
        .entries
        .iter()
        .filter(|p| p.entry.state.trigger_id.is_some() && p.verdict.is_queued())
        .map(|p| p.entry.state.conversation_id.as_str())
        .collect();
    if queued.is_empty() {
        return Ok(HashMap::new());
    }
    store::waiting::positions(tx, &part.batch.campaign_id, &queued).await
}

/// One campaign's answers, after its batch committed; records what its drain did.
fn answer(part: WrittenPart) -> CampaignOutcome {
    let WrittenPart {
        planned,
        written,
        positions,
    } = part;
    let triggers = &planned.batch.triggers;
    let reply_settings = planned.settings.replies;
    let now = chrono::Utc::now();
    let mut drained = 0;
    let mut waiting = 0;
    let mut replies: Vec<AppResult<AutoAssigned>> = triggers
        .iter()
        .map(|trigger| Err(unknown_conversation(&trigger.conversation_id)))
        .collect();
    for planned_entry in planned.plan.entries {
        let Entry {
            source,
            conversation,
            state,
        } = planned_entry.entry;
        let index = match source {
            EntrySource::Waiting { since } => {
                waiting += 1;
                if written.assigned.contains(&conversation.conversation_id) {
                    drained += 1;
                    metrics::counter!(WAITING_DRAINED).increment(1);
                    let waited = (now - since).num_milliseconds().max(0) as f64 / 1e3;
                    metrics::histogram!(WAITING_SECONDS).record(waited);
                }
                continue;
            }
            EntrySource::Trigger { index } => index,
        };
        replies[index] = match planned_entry.verdict {
            Verdict::Decided(decision) => {
                let holder_unreachable = held_by_unreachable(&decision, &state, &planned.off_shift);
                let policy_returns = holder_unreachable.as_ref().is_some_and(|(_, why)| {
                    why.returns(
                        planned.settings.on_unreachable_holder,
                        planned.settings.on_unavailable,
                    )
                });
                Ok(AutoAssigned {
                    holder_unreachable,
                    returned: false,
                    policy_returns,
                    queue_position: positions.get(&conversation.conversation_id).copied(),
                    conversation: with_due_time(
                        written
                            .conversations
                            .get(&conversation.conversation_id)
                            .cloned()
                            .unwrap_or(conversation),
                        &reply_settings,
                    ),
                    decision,
                })
            }
            Verdict::TriggerReused { first_conversation } => {
                Err(trigger_reused(&triggers[index], &first_conversation))
            }
        };
    }
    // Progress is sure if some were placed, or some read had left the queue: the next read sees others.
    let left = planned.queue_read - waiting;
    let drain_again = planned.drain > 0
        && planned.queue_read as i64 == planned.drain
        && (drained > 0 || left > 0);
    CampaignOutcome {
        replies,
        drain_again,
    }
}

/// The conversation with when its reply is due (the batch's statements leave it to the settings it holds).
fn with_due_time(mut conversation: Conversation, replies: &ReplySettings) -> Conversation {
    conversation.reply_due_at = reply_due_at(&conversation, replies);
    conversation
}

/// The holder a trigger found its conversation with, if they cannot answer it: the member wrote to someone
/// deactivated or without reply access, or away, offline or off shift (`service::auto_assign::auto_assign`
/// applies the campaign's policy).
fn held_by_unreachable(
    decision: &Decision,
    state: &TriggerState,
    off_shift: &HashSet<String>,
) -> Option<(String, Unreachable)> {
    let AutoOutcome::AlreadyAssigned(holder) = &decision.outcome else {
        return None;
    };
    let why = state
        .holder_unreachable
        .or_else(|| absent(state.holder_availability?, !off_shift.contains(holder)))?;
    // Held since before the batch (not just assigned by it to someone eligible).
    (!decision.duplicate && state.current_assignee.as_deref() == Some(holder.as_str()))
        .then(|| (holder.clone(), why))
}

/// `lock_campaigns` returns every campaign it was given: only a broken database could leave one out.
fn unlocked(campaign_id: &str) -> AppError {
    AppError::Database(sqlx::Error::Decode(
        format!("campaign {campaign_id:?} was not locked by its batch").into(),
    ))
}

fn unknown_conversation(conversation_id: &str) -> AppError {
    AppError::new(
        Reason::ConversationNotFound,
        format!(
            "conversation {conversation_id:?} does not exist in this campaign; pass member_id (and \
             member_tags) so its first inbound message creates it"
        ),
    )
}

fn trigger_reused(trigger: &Trigger, first_conversation: &str) -> AppError {
    AppError::new(
        Reason::TriggerIdReused,
        format!(
            "trigger_id {:?} was first delivered for conversation {first_conversation:?}, not {:?}; \
             give each inbound message its own trigger id",
            trigger.trigger_id, trigger.conversation_id
        ),
    )
}
