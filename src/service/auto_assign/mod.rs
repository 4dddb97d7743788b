//! Auto-assignment (AutoAssignConversation) and the inbox settings that switch it on.
//!
//! Triggers of one campaign are coalesced ([`Coalescer`]) into batches; [`run_batch`] decides a batch in one
//! transaction under the campaign's auto-assign lock, as if its triggers had come one by one: `batch` runs
//! its stages, `settings` changes what it decides by, `preview` explains it, `waiting` lists and sweeps the
//! waiting queue, `upkeep` folds loads and forgets old trigger ids.

mod batch;
mod coalescer;
mod preview;
mod settings;
mod upkeep;
mod waiting;

pub use batch::{CampaignBatch, CampaignOutcome, run_batch};
pub use coalescer::{Batching, Coalescer};
pub use preview::{Preview, preview};
pub use settings::{get_settings, set_capacity, update_settings};
pub use upkeep::{fold_loads, prune_triggers};
pub use waiting::{list_waiting, sweep};

use crate::domain::auto_assign::{Decision, Priority, Trigger};
use crate::domain::holders::Unreachable;
use crate::domain::model::Conversation;
use crate::domain::validate::{self, Violations};
use crate::error::AppResult;
use crate::service::{AfterCommit, SystemCall, holders};
use crate::store::Store;

/// AutoAssignConversation's request, as the flow builder sent it.
#[derive(Debug, Clone, Default)]
pub struct TriggerRequest {
    pub trigger_id: String,
    pub conversation_id: String,
    pub member_id: String,
    pub member_tags: Vec<String>,
    pub priority: Priority,
}

/// What one trigger did, with the conversation as it stands after its batch.
#[derive(Debug, Clone)]
pub struct AutoAssigned {
    pub decision: Decision,
    pub conversation: Conversation,
    /// Where it waits (1 = next), when it is queued.
    pub queue_position: Option<i64>,
    /// The member wrote to a conversation held by someone who cannot answer it: who, and why.
    pub holder_unreachable: Option<(String, Unreachable)>,
    /// And it went back to the front of the queue for that (`on_unreachable_holder`, or `on_unavailable`
    /// for a holder away, offline or off shift).
    pub returned: bool,
    /// The campaign's setting for that cause returns such conversations to the queue, as the batch read it
    /// (the follow-up that does reads it again under the campaign's lock).
    pub policy_returns: bool,
}

/// AutoAssignConversation: validates the trigger and runs it in its campaign's next batch. A message to a
/// conversation held by someone who cannot answer it applies the campaign's `on_unreachable_holder` again,
/// in a transaction of its own that reads the holder afresh under the campaign's lock.
pub async fn auto_assign(
    store: &Store,
    after: &AfterCommit,
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
        priority: request.priority,
    };
    let mut answer = coalescer.submit(&call.campaign_id, trigger).await?;
    if answer.policy_returns
        && let Some(now) = holders::return_if_unreachable(
            store,
            after,
            &call.campaign_id,
            &answer.conversation.conversation_id,
            call.request_id.as_deref(),
        )
        .await?
    {
        answer.conversation = now;
        answer.returned = true;
    }
    Ok(answer)
}
