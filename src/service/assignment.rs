//! Changing one conversation: assign, unassign, reassign, resolve and reopen. Each locks the conversation
//! row, so racing changes serialise and the second decides on the first one's result.

use crate::domain::access::may_view;
use crate::domain::assignment::{
    AssigneeRequest, Plan, Situation, check_version, plan_assignee_change, plan_status_change,
};
use crate::domain::model::{Actor, AssignmentSource, Changed, Conversation, ConversationStatus};
use crate::domain::validate;
use crate::error::{AppError, AppResult};
use crate::service::{ActorCall, authenticate};
use crate::store::conversations::{self, AssigneeChange, Locked};
use crate::store::{Conn, Store};

/// AssignConversation, UnassignConversation and ReassignConversation: the rules of `request` applied to
/// the conversation as it is under its row lock; `expected_version` makes it a compare-and-set.
pub async fn change_assignee(
    store: &Store,
    call: &ActorCall,
    conversation_id: &str,
    request: AssigneeRequest<'_>,
    expected_version: Option<i64>,
) -> AppResult<Changed<Conversation>> {
    validate::id("conversation_id", conversation_id)?;
    if let Some(target_id) = request.target_id() {
        validate::id("assignee_id", target_id)?;
    }
    let mut tx = store.begin().await?;
    let actor = authenticate(&mut tx, call).await?;
    let locked = lock(&mut tx, call, &actor, conversation_id, request.target_id()).await?;
    check_version(
        conversation_id,
        expected_version,
        locked.conversation.version,
    )?;
    let plan = plan_assignee_change(
        &actor,
        &situation(&actor, &locked, conversation_id),
        request,
        locked.target.as_ref(),
    )?;
    let result = match plan {
        Plan::Unchanged => Changed {
            value: locked.conversation,
            changed: false,
        },
        Plan::Change { action, to } => {
            let change = AssigneeChange {
                campaign_id: &call.campaign_id,
                conversation_id,
                action,
                from: locked.conversation.assignee_id.as_deref(),
                to: to.as_deref(),
                actor_id: &actor.user_id,
                source: AssignmentSource::Manual,
                request_id: call.request_id.as_deref(),
            };
            Changed {
                value: conversations::set_assignee(&mut tx, change).await?,
                changed: true,
            }
        }
    };
    tx.commit().await?;
    Ok(result)
}

/// ResolveConversation and ReopenConversation: the status changes, the assignee never does.
pub async fn change_status(
    store: &Store,
    call: &ActorCall,
    conversation_id: &str,
    wanted: ConversationStatus,
) -> AppResult<Changed<Conversation>> {
    validate::id("conversation_id", conversation_id)?;
    let mut tx = store.begin().await?;
    let actor = authenticate(&mut tx, call).await?;
    let locked = lock(&mut tx, call, &actor, conversation_id, None).await?;
    let changes = plan_status_change(
        &actor,
        &situation(&actor, &locked, conversation_id),
        locked.conversation.status,
        wanted,
    )?;
    let result = if changes {
        Changed {
            value: conversations::set_status(&mut tx, &call.campaign_id, conversation_id, wanted)
                .await?,
            changed: true,
        }
    } else {
        Changed {
            value: locked.conversation,
            changed: false,
        }
    };
    tx.commit().await?;
    Ok(result)
}

async fn lock(
    conn: &mut Conn,
    call: &ActorCall,
    actor: &Actor,
    conversation_id: &str,
    target_id: Option<&str>,
) -> AppResult<Locked> {
    conversations::lock(
        conn,
        &call.campaign_id,
        conversation_id,
        &actor.user_id,
        target_id,
    )
    .await?
    .ok_or_else(|| AppError::conversation_not_found(conversation_id))
}

fn situation<'a>(actor: &Actor, locked: &'a Locked, conversation_id: &'a str) -> Situation<'a> {
    let assignee = locked.conversation.assignee_id.as_deref();
    Situation {
        conversation_id,
        current_assignee: assignee,
        actor_can_view: may_view(&actor.as_user(), assignee, locked.actor_grants),
    }
}
