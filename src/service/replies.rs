//! RecordReply, and the silence timers: a reply ends the member's wait; a holder who has not replied in
//! time loses the conversation to the front of the queue (or is flagged), exactly once, on whichever
//! replica finds the timer due first.

use std::collections::HashMap;

use chrono::Utc;

use crate::domain::access::{may_view, reply_permission};
use crate::domain::actor;
use crate::domain::effects::Change;
use crate::domain::model::Conversation;
use crate::domain::replies::{Lapse, Reply, ReplyPlan, on_lapse, plan_reply};
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult};
use crate::observability::{REPLIES_OVERDUE, REPLY_TIMER_LATENESS_SECONDS, TIME_TO_REPLY_SECONDS};
use crate::service::agenda::Agenda;
use crate::service::{AfterCommit, Caller};
use crate::store::conversations::{self, LockedWithUsers};
use crate::store::replies::{self, Lapsed};
use crate::store::waiting::Requeue;
use crate::store::{Store, auto_assign, waiting};

/// The cause history records for a lapse.
const REPLY_OVERDUE: &str = "REPLY_OVERDUE";

/// Most timers one transaction fires; a campaign with more due goes on at once in another.
const FIRE_LIMIT: i64 = 500;

/// What RecordReply did.
#[derive(Debug, Clone)]
pub struct RecordedReply {
    pub conversation: Conversation,
    /// The message id was reported before: nothing was written.
    pub duplicate: bool,
}

/// RecordReply: validate, lock the conversation and share-lock the sender, decide (may they reply now; was
/// this message reported before), record the reply and end the wait, commit.
#[tracing::instrument(name = "db.transaction", skip_all)]
pub async fn record_reply(
    store: &Store,
    after: &AfterCommit,
    caller: &Caller,
    conversation_id: &str,
    message_id: &str,
    sender_id: &str,
) -> AppResult<RecordedReply> {
    let reply = validate_reply(caller, conversation_id, message_id, sender_id)?;
    let campaign_id = caller.campaign_id();
    let mut tx = store.begin().await?;
    let LockedWithUsers { locked, users } = conversations::lock_with_users(
        &mut tx,
        campaign_id,
        &reply.conversation_id,
        &reply.sender_id,
        &[reply.sender_id.as_str()],
        None,
    )
    .await?;
    let sender = users.iter().find(|u| u.user_id == reply.sender_id);
    let sender = match caller {
        // A user reports their own reply: the same checks as any call they make.
        Caller::Actor(_) => {
            actor::authenticate(campaign_id, &reply.sender_id, sender.map(|u| u.to_ref()))?;
            sender.map(|u| u.to_ref())
        }
        Caller::System(_) => sender.map(|u| u.to_ref()),
    }
    .ok_or_else(|| AppError::user_not_found(&reply.sender_id))?;
    let locked = locked.ok_or_else(|| AppError::conversation_not_found(&reply.conversation_id))?;
    let holder = locked.conversation.assignee_id.as_deref();
    // A user who may not see the conversation learns nothing of it, as everywhere.
    if matches!(caller, Caller::Actor(_)) && !may_view(&sender, holder, locked.actor_grants) {
        return Err(AppError::conversation_not_found(&reply.conversation_id));
    }
    let recorded = replies::recorded(&mut tx, campaign_id, &reply.message_id).await?;
    let permission = reply_permission(&sender, holder, locked.actor_grants.reply);
    let plan = plan_reply(&reply, recorded.as_ref(), permission, holder)?;
    if plan == ReplyPlan::Repeat {
        tx.commit().await?;
        return Ok(RecordedReply {
            conversation: locked.conversation,
            duplicate: true,
        });
    }
    let waited_since = locked.conversation.awaiting_reply_since;
    let conversation = replies::record(&mut tx, campaign_id, &reply).await?;
    tx.commit().await?;
    if let Some(since) = waited_since {
        let waited = (Utc::now() - since).num_milliseconds().max(0) as f64 / 1e3;
        metrics::histogram!(TIME_TO_REPLY_SECONDS).record(waited);
    }
    after.committed(campaign_id, Change::ReplyRecorded);
    Ok(RecordedReply {
        conversation,
        duplicate: false,
    })
}

/// The reply a request reports: a system names the sender; a user reports their own.
fn validate_reply(
    caller: &Caller,
    conversation_id: &str,
    message_id: &str,
    sender_id: &str,
) -> AppResult<Reply> {
    let mut violations = Violations::default();
    violations.check(validate::id("conversation_id", conversation_id));
    violations.check(validate::id("message_id", message_id));
    let named = violations.check(validate::optional_id("sender_id", sender_id));
    let sender = match (caller, named) {
        (Caller::Actor(call), None) => call.actor_id.clone(),
        (Caller::Actor(call), Some(named)) if named == call.actor_id => named,
        (Caller::Actor(call), Some(_)) => {
            violations.add(
                "sender_id",
                format!(
                    "a user reports only their own replies: leave sender_id empty or set it to the \
                     x-actor-id {:?}",
                    call.actor_id
                ),
            );
            String::new()
        }
        (Caller::System(_), Some(named)) => named,
        (Caller::System(_), None) => {
            violations.add("sender_id", "sender_id is required when no x-actor-id acts");
            String::new()
        }
    };
    violations.finish()?;
    Ok(Reply {
        message_id: message_id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        sender_id: sender,
    })
}

/// One pass of the silence timers: every campaign this replica's agenda has a timer due in has them fired,
/// each campaign in transactions of its own (a backlog: one after another; a campaign that fails is left to
/// the next pass), and is read into the agenda again. Every replica runs passes; a timer fires once, under
/// its campaign's lock and its conversation's row lock. Returns how many fired.
pub async fn fire_due_timers(
    store: &Store,
    after: &AfterCommit,
    agenda: &Agenda,
) -> AppResult<usize> {
    let mut fired = 0;
    for campaign_id in agenda.due(store, Utc::now()).await? {
        // Fired or not, its next timer is read again.
        agenda.touch(&campaign_id);
        loop {
            // One campaign's failure (a deadlock victim, a database hiccup) must not hold up the others':
            // it is logged, and the next pass tries it again.
            let lapsed = match fire_campaign(store, &campaign_id).await {
                Ok(lapsed) => lapsed,
                Err(err) => {
                    tracing::warn!(campaign_id, error = %err, "could not fire a campaign's silence timers");
                    break;
                }
            };
            if lapsed > 0 {
                after.committed(&campaign_id, Change::RepliesOverdue);
            }
            fired += lapsed;
            if (lapsed as i64) < FIRE_LIMIT {
                break;
            }
        }
    }
    Ok(fired)
}

/// Fires the campaign's due timers in one transaction: takes its auto-assign lock (the lock order:
/// campaign, then conversations), locks the conversations whose reply is due now (read again after each
/// row lock, so one answered meanwhile does not fire), and applies the campaign's setting to each.
#[tracing::instrument(name = "db.transaction", skip_all, fields(campaign_id))]
async fn fire_campaign(store: &Store, campaign_id: &str) -> AppResult<usize> {
    let mut tx = store.begin().await?;
    let settings = auto_assign::lock(&mut tx, campaign_id).await?.replies;
    let due = match settings.reply_within_seconds {
        Some(within) => replies::lock_due(&mut tx, campaign_id, within, FIRE_LIMIT).await?,
        // Switched off since the pass looked.
        None => Vec::new(),
    };
    if due.is_empty() {
        // Another replica fired them first.
        tx.commit().await?;
        return Ok(0);
    }
    let mut by_lapse: HashMap<Lapse, Vec<&Lapsed>> = HashMap::new();
    for lapsed in &due {
        by_lapse
            .entry(on_lapse(&settings, lapsed.lapses_before))
            .or_default()
            .push(lapsed);
    }
    for (lapse, lapsed) in &by_lapse {
        let ids: Vec<&str> = lapsed.iter().map(|l| l.conversation_id.as_str()).collect();
        let requeue = |stop_timing| Requeue {
            conversation_ids: &ids,
            cause: REPLY_OVERDUE,
            record_lapse: true,
            stop_timing,
            actor_id: None,
            request_id: None,
        };
        match lapse {
            Lapse::Reroute => {
                waiting::requeue(&mut tx, campaign_id, requeue(false)).await?;
            }
            Lapse::RerouteUntimed => {
                waiting::requeue(&mut tx, campaign_id, requeue(true)).await?;
            }
            Lapse::Notify => replies::flag_overdue(&mut tx, campaign_id, &ids).await?,
        }
    }
    tx.commit().await?;
    let now = Utc::now();
    for (lapse, lapsed) in by_lapse {
        metrics::counter!(REPLIES_OVERDUE, "action" => lapse.name()).increment(lapsed.len() as u64);
        for l in lapsed {
            let late = (now - l.due_at).num_milliseconds().max(0) as f64 / 1e3;
            metrics::histogram!(REPLY_TIMER_LATENESS_SECONDS).record(late);
        }
    }
    Ok(due.len())
}
