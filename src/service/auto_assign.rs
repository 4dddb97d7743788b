//! Auto-assignment (AutoAssignConversation) and the inbox settings that switch it on.
//!
//! Triggers of one campaign are coalesced ([`Coalescer`]) into batches; [`run_batch`] decides a batch in one
//! transaction under the campaign's auto-assign lock, as if its triggers had come one by one.

mod coalescer;
mod routing;
mod waiting;

pub use coalescer::Coalescer;
pub use routing::{Preview, preview, set_capacity};
pub use waiting::{list_waiting, sweep};

use std::time::Instant;

use tracing::Instrument;

use crate::domain::actor::require_admin;
use std::collections::HashMap;

use crate::domain::auto_assign::{
    AutoOutcome, BatchPlan, Decision, InboxSettings, RotationStart, Routing, RoutingMode,
    SettingsChange, Trigger, Verdict, plan_batch,
};
use crate::domain::effects::Change;
use crate::domain::model::Conversation;
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult, Reason};
use crate::observability::{
    AUTO_ASSIGN_BATCH, LOCK_WAIT_SECONDS, WAITING_DRAINED, WAITING_SECONDS,
};
use crate::service::{ActorCall, AfterCommit, SystemCall, authenticate, lock_actor};
use crate::store::{self, Store, auto_assign, inbox_settings};

/// AutoAssignConversation's request, as the flow builder sent it.
#[derive(Debug, Clone, Default)]
pub struct TriggerRequest {
    pub trigger_id: String,
    pub conversation_id: String,
    pub member_id: String,
    pub member_tags: Vec<String>,
}

/// What one trigger did, with the conversation as it stands after its batch.
#[derive(Debug, Clone)]
pub struct AutoAssigned {
    pub decision: Decision,
    pub conversation: Conversation,
    /// Where it waits (1 = next), when it is queued.
    pub queue_position: Option<i64>,
}

/// AutoAssignConversation: validates the trigger and runs it in its campaign's next batch.
pub async fn auto_assign(
    coalescer: &Coalescer,
    call: &SystemCall,
    request: TriggerRequest,
) -> AppResult<AutoAssigned> {
    let mut violations = Violations::default();
    violations.check(validate::id("conversation_id", &request.conversation_id));
    violations.check(validate::id("trigger_id", &request.trigger_id));
    let member_id = violations.check(validate::optional_id("member_id", &request.member_id));
    let member_tags = violations.check(validate::tags("member_tags", &request.member_tags));
    violations.finish()?;
    let trigger = Trigger {
        trigger_id: request.trigger_id,
        conversation_id: request.conversation_id,
        member_id,
        member_tags,
        request_id: call.request_id.clone(),
    };
    coalescer.submit(&call.campaign_id, trigger).await
}

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
    /// The batch numbered all of the campaign's events; if not, the feed's sequencer numbers the rest.
    pub numbered: bool,
}

/// Decides a batch of triggers of one or several campaigns in one transaction: creates unknown
/// conversations, takes the campaigns' auto-assign locks (in a fixed order), reads for each campaign the
/// waiting conversations it drains first (if any may wait and auto-assignment is on) and every trigger's
/// conversation (all locked) with their eligible organizers, plans each campaign's part on its own, and
/// writes them all in one statement. Each campaign's part is decided exactly as if it were a batch of its
/// own. Returns one outcome per part, in order.
pub async fn run_batch(store: &Store, parts: &[CampaignBatch]) -> AppResult<Vec<CampaignOutcome>> {
    let transaction = tracing::info_span!("db.transaction", lock_wait_ms = tracing::field::Empty);
    run_batch_in(store, parts, &transaction)
        .instrument(transaction.clone())
        .await
}

/// One campaign's part, as read and planned.
struct Planned {
    settings: auto_assign::LockedSettings,
    drain: i64,
    reads: auto_assign::TriggerReads,
    plan: BatchPlan,
}

async fn run_batch_in(
    store: &Store,
    parts: &[CampaignBatch],
    transaction: &tracing::Span,
) -> AppResult<Vec<CampaignOutcome>> {
    let campaigns: Vec<auto_assign::CampaignTriggers> = parts
        .iter()
        .map(|part| auto_assign::CampaignTriggers {
            campaign_id: &part.campaign_id,
            triggers: &part.triggers,
        })
        .collect();
    let mut tx = store.begin_keyed().await?;
    let waiting = Instant::now();
    let ids: Vec<&str> = campaigns.iter().map(|part| part.campaign_id).collect();
    // Creates the conversations the triggers bring first, then locks; the feed heads too, so the write can
    // number the campaigns' events (no sequencer transaction per campaign after the batch).
    let mut locked = auto_assign::lock_campaigns(&mut tx, &ids, &campaigns, true).await?;
    let lock_wait = waiting.elapsed().as_secs_f64();
    metrics::histogram!(LOCK_WAIT_SECONDS).record(lock_wait);
    transaction.record("lock_wait_ms", lock_wait * 1e3);
    let size: usize = parts.iter().map(|part| part.triggers.len()).sum();
    metrics::histogram!(AUTO_ASSIGN_BATCH).record(size as f64);

    let mut reading = Vec::with_capacity(parts.len());
    for part in &campaigns {
        let settings = locked
            .remove(part.campaign_id)
            .ok_or_else(|| unlocked(part.campaign_id))?;
        let drain = if settings.auto_assign_enabled && settings.has_waiting {
            DRAIN_LIMIT
        } else {
            0
        };
        let scope = auto_assign::BatchReads {
            enabled: settings.auto_assign_enabled,
            last_assigned: settings.rotation_start == RotationStart::LastAssigned,
            drain,
            default_capacity: settings.default_capacity,
            balanced: settings.routing_mode == RoutingMode::Balanced,
        };
        reading.push((settings, drain, scope));
    }
    // Loads (capacity or balance in play) are read, and folded, by the same statement.
    let read_parts: Vec<_> = campaigns
        .iter()
        .zip(&reading)
        .map(|(part, (_, _, scope))| (*part, *scope))
        .collect();
    let all_reads = auto_assign::read_triggers(&mut tx, &read_parts).await?;
    let planned: Vec<Planned> = reading
        .into_iter()
        .zip(all_reads)
        .map(|((settings, drain, _), mut reads)| {
            let start = match settings.rotation_start {
                RotationStart::LastAssigned => reads.last_assigned.as_deref(),
                RotationStart::LastAutoAssigned => settings.last_auto_assignee_id.as_deref(),
            };
            let routing = Routing {
                mode: settings.routing_mode,
                loads: reads.loads.take(),
            };
            let plan = plan_batch(settings.auto_assign_enabled, start, routing, &reads.states);
            Planned {
                settings,
                drain,
                reads,
                plan,
            }
        })
        .collect();
    let request_ids: Vec<Vec<Option<&str>>> = planned
        .iter()
        .zip(parts)
        .map(|(planned, part)| {
            planned
                .reads
                .indexes
                .iter()
                .map(|index| index.and_then(|i| part.triggers[i].request_id.as_deref()))
                .collect()
        })
        .collect();
    let writes: Vec<auto_assign::CampaignWrite> = planned
        .iter()
        .zip(parts)
        .zip(&request_ids)
        .map(
            |((planned, part), request_ids)| auto_assign::CampaignWrite {
                campaign_id: &part.campaign_id,
                states: &planned.reads.states,
                request_ids,
                plan: &planned.plan,
                old_cursor: planned.settings.last_auto_assignee_id.as_deref(),
                waiting: waiting_after(
                    &planned.settings,
                    &planned.reads,
                    &planned.plan,
                    planned.drain,
                ),
            },
        )
        .collect();
    let written = auto_assign::write_plan(&mut tx, &writes).await?;
    let mut positions = Vec::with_capacity(parts.len());
    for (planned, part) in planned.iter().zip(parts) {
        let queued = queued_triggers(&planned.reads, &planned.plan);
        positions.push(if queued.is_empty() {
            HashMap::new()
        } else {
            store::waiting::positions(&mut tx, &part.campaign_id, &queued).await?
        });
    }
    tx.commit().await?;
    Ok(planned
        .into_iter()
        .zip(&written.assigned)
        .zip(positions)
        .zip(parts)
        .map(|(((planned, assigned), positions), part)| {
            let mut outcome = answer(planned, assigned, &positions, &part.triggers);
            outcome.numbered = !written.unfinished.contains(&part.campaign_id);
            outcome
        })
        .collect())
}

/// The conversations of the part's triggers that it queued.
fn queued_triggers<'a>(reads: &'a auto_assign::TriggerReads, plan: &BatchPlan) -> Vec<&'a str> {
    reads
        .states
        .iter()
        .zip(&plan.verdicts)
        .filter(|(state, verdict)| {
            state.trigger_id.is_some()
                && matches!(verdict, Verdict::Decided(d) if d.outcome == AutoOutcome::Queued)
        })
        .map(|(state, _)| state.conversation_id.as_str())
        .collect()
}

/// One campaign's answers, after its batch committed; records what its drain did.
fn answer(
    planned: Planned,
    assigned: &HashMap<String, Conversation>,
    positions: &HashMap<String, i64>,
    triggers: &[Trigger],
) -> CampaignOutcome {
    let Planned {
        drain, reads, plan, ..
    } = planned;
    let now = chrono::Utc::now();
    let mut drained = 0;
    for (state, since) in reads.states[..reads.waiting]
        .iter()
        .zip(&reads.waiting_since)
    {
        if !assigned.contains_key(&state.conversation_id) {
            continue;
        }
        drained += 1;
        metrics::counter!(WAITING_DRAINED).increment(1);
        if let Some(since) = since {
            let waited = (now - *since).num_milliseconds().max(0) as f64 / 1e3;
            metrics::histogram!(WAITING_SECONDS).record(waited);
        }
    }
    // Progress is sure if some were placed, or some read had left the queue: the next read sees others.
    let left = reads.queue_read - reads.waiting;
    let drain_again = drain > 0 && reads.queue_read as i64 == drain && (drained > 0 || left > 0);

    let mut replies: Vec<AppResult<AutoAssigned>> = triggers
        .iter()
        .map(|trigger| Err(unknown_conversation(&trigger.conversation_id)))
        .collect();
    for ((index, conversation), verdict) in reads
        .indexes
        .into_iter()
        .zip(reads.conversations)
        .zip(plan.verdicts)
    {
        let Some(index) = index else {
            continue;
        };
        replies[index] = match verdict {
            Verdict::Decided(decision) => Ok(AutoAssigned {
                queue_position: positions.get(&conversation.conversation_id).copied(),
                conversation: assigned
                    .get(&conversation.conversation_id)
                    .cloned()
                    .unwrap_or(conversation),
                decision,
            }),
            Verdict::TriggerReused { first_conversation } => {
                Err(trigger_reused(&triggers[index], &first_conversation))
            }
        };
    }
    CampaignOutcome {
        replies,
        drain_again,
        numbered: true,
    }
}

/// `lock_campaigns` returns every campaign it was given: only a broken database could leave one out.
fn unlocked(campaign_id: &str) -> AppError {
    AppError::Database(sqlx::Error::Decode(
        format!("campaign {campaign_id:?} was not locked by its batch").into(),
    ))
}

/// Whether conversations may still wait after the batch: some were queued by it, or some it read stayed,
/// or it read as many as it may and more may follow.
fn waiting_after(
    settings: &auto_assign::LockedSettings,
    reads: &auto_assign::TriggerReads,
    plan: &BatchPlan,
    drain: i64,
) -> auto_assign::WaitingAfter {
    let queued = plan
        .verdicts
        .iter()
        .any(|v| matches!(v, Verdict::Decided(d) if d.outcome == AutoOutcome::Queued));
    let has_waiting = if drain == 0 {
        // Not drained (auto-assignment off, or nothing waits): the flag keeps its meaning.
        settings.has_waiting || queued
    } else {
        queued || reads.queue_read as i64 == drain
    };
    auto_assign::WaitingAfter {
        was: settings.has_waiting,
        has_waiting,
    }
}

/// GetInboxSettings: any active user of the campaign.
pub async fn get_settings(store: &Store, call: &ActorCall) -> AppResult<Option<InboxSettings>> {
    let mut conn = store.acquire().await?;
    authenticate(&mut conn, call).await?;
    inbox_settings::get(&mut conn, &call.campaign_id).await
}

/// UpdateInboxSettings: admins; fields left unset keep their value.
#[tracing::instrument(name = "db.transaction", skip_all)]
pub async fn update_settings(
    store: &Store,
    after: &AfterCommit,
    call: &ActorCall,
    change: SettingsChange,
) -> AppResult<Option<InboxSettings>> {
    if change.default_capacity.is_some_and(|capacity| capacity < 0) {
        return Err(AppError::invalid(
            "default_capacity",
            "default_capacity must be 0 (unlimited) or more",
        ));
    }
    let mut tx = store.begin().await?;
    // The campaign's lock before the actor's share lock: the lock order everywhere (ARCHITECTURE.md).
    inbox_settings::lock(&mut tx, &call.campaign_id).await?;
    let (actor, _) = lock_actor(&mut tx, call, &[]).await?;
    require_admin(&actor, "change inbox settings")?;
    let nothing = change.auto_assign_enabled.is_none()
        && change.default_capacity.is_none()
        && change.routing_mode.is_none()
        && change.rotation_start.is_none()
        && change.on_unavailable.is_none();
    let settings = if nothing {
        inbox_settings::get(&mut tx, &call.campaign_id).await?
    } else {
        Some(inbox_settings::update(&mut tx, &call.campaign_id, change, &actor.user_id).await?)
    };
    tx.commit().await?;
    after.committed(&call.campaign_id, Change::SettingsUpdated);
    Ok(settings)
}

/// Folds every campaign's pending load changes into its organizers' counts, one campaign at a time under
/// its auto-assign lock; returns how many changes. Batches that read loads fold their own campaign's.
pub async fn fold_loads(store: &Store) -> AppResult<u64> {
    let campaigns = {
        let mut conn = store.acquire().await?;
        auto_assign::campaigns_with_load_changes(&mut conn).await?
    };
    let mut folded = 0;
    for campaign_id in campaigns {
        let mut tx = store.begin().await?;
        auto_assign::lock(&mut tx, &campaign_id).await?;
        folded += auto_assign::fold_loads(&mut tx, &campaign_id).await?;
        tx.commit().await?;
    }
    Ok(folded)
}

/// Forgets trigger ids older than `retention`; returns how many.
pub async fn prune_triggers(store: &Store, retention: std::time::Duration) -> AppResult<u64> {
    let mut conn = store.acquire().await?;
    auto_assign::prune_triggers(&mut conn, retention).await
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
