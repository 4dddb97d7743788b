//! Changing one conversation: assign, unassign, reassign, resolve and reopen. Each locks the conversation
//! row, so racing changes serialise and the second decides on the first one's result; the actor and the
//! target are read after that lock, under share locks, so a concurrent demotion or deactivation cannot
//! slip between the decision and the commit.

use crate::domain::access::may_view;
use crate::domain::assignment::{
    AssigneeRequest, Plan, Situation, plan_assignee_change, plan_status_change,
};
use crate::domain::effects::Change;
use crate::domain::model::{
    Actor, AssignmentSource, Changed, Conversation, ConversationStatus, UserRef,
};
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult};
use crate::service::{ActorCall, AfterCommit, lock_conversation_and_actor};
use crate::store::conversations::{self, AssigneeChange, Locked};
use crate::store::{Conn, Store, auto_assign, waiting};

/// AssignConversation, UnassignConversation and ReassignConversation: the rules of `request` applied to
/// the conversation as it is under its row lock; `expected_version` makes it a compare-and-set.
pub async fn change_assignee(
    store: &Store,
    after: &AfterCommit,
    call: &ActorCall,
    conversation_id: &str,
    request: AssigneeRequest<'_>,
    expected_version: Option<i64>,
) -> AppResult<Changed<Conversation>> {
    let change = Change::from(request);
    let done = assignee_in_tx(store, call, conversation_id, request, expected_version).await?;
    after.committed(&call.campaign_id, change);
    Ok(done)
}

#[tracing::instrument(name = "db.transaction", skip_all, fields(lock_wait_ms = tracing::field::Empty))]
async fn assignee_in_tx(
    store: &Store,
    call: &ActorCall,
    conversation_id: &str,
    request: AssigneeRequest<'_>,
    expected_version: Option<i64>,
) -> AppResult<Changed<Conversation>> {
    let mut violations = Violations::default();
    violations.check(validate::id("conversation_id", conversation_id));
    if let Some(target_id) = request.target_id() {
        violations.check(validate::id("assignee_id", target_id));
    }
    violations.finish()?;

    let mut tx = store.begin().await?;
    // Releasing queues the conversation and sets the campaign's waiting flag: the campaign's lock comes
    // first, as everywhere (ARCHITECTURE.md, lock order).
    if request == AssigneeRequest::Release {
        auto_assign::lock(&mut tx, &call.campaign_id).await?;
    }
    let others: Vec<&str> = request.target_id().into_iter().collect();
    let (locked, actor, users) = lock(&mut tx, call, conversation_id, &others).await?;
    let locked = locked.ok_or_else(|| AppError::conversation_not_found(conversation_id))?;
    let situation = situation(&actor, &locked, conversation_id);
    if let Some(retried) = already_applied(&locked, &situation) {
        tx.commit().await?;
        return Ok(retried);
    }
    let target = request
        .target_id()
        .and_then(|id| users.iter().find(|u| u.user_id == id));
    let plan = plan_assignee_change(&actor, &situation, request, target, expected_version)?;
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
            let unassigned = conversations::set_assignee(&mut tx, change).await?;
            if let (AssigneeRequest::Release, Some(holder)) = (request, change.from) {
                waiting::release(
                    &mut tx,
                    &call.campaign_id,
                    conversation_id,
                    holder,
                    &actor.user_id,
                    call.request_id.as_deref(),
                )
                .await?;
            }
            Changed {
                value: unassigned,
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
    after: &AfterCommit,
    call: &ActorCall,
    conversation_id: &str,
    wanted: ConversationStatus,
) -> AppResult<Changed<Conversation>> {
    let done = status_in_tx(store, call, conversation_id, wanted).await?;
    after.committed(&call.campaign_id, Change::status(wanted));
    Ok(done)
}

#[tracing::instrument(name = "db.transaction", skip_all, fields(lock_wait_ms = tracing::field::Empty))]
async fn status_in_tx(
    store: &Store,
    call: &ActorCall,
    conversation_id: &str,
    wanted: ConversationStatus,
) -> AppResult<Changed<Conversation>> {
    validate::id("conversation_id", conversation_id)?;
    let mut tx = store.begin().await?;
    let (locked, actor, _) = lock(&mut tx, call, conversation_id, &[]).await?;
    let locked = locked.ok_or_else(|| AppError::conversation_not_found(conversation_id))?;
    let situation = situation(&actor, &locked, conversation_id);
    if let Some(retried) = already_applied(&locked, &situation) {
        tx.commit().await?;
        return Ok(retried);
    }
    let changes = plan_status_change(&actor, &situation, locked.conversation.status, wanted)?;
    let result = if changes {
        Changed {
            value: conversations::set_status(
                &mut tx,
                &call.campaign_id,
                conversation_id,
                wanted,
                &actor.user_id,
                call.request_id.as_deref(),
            )
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

/// Locks the conversation first (every change of one conversation queues here; the wait is recorded on the
/// transaction's span), then share-locks the actor and `others`.
async fn lock(
    conn: &mut Conn,
    call: &ActorCall,
    conversation_id: &str,
    others: &[&str],
) -> AppResult<(Option<Locked>, Actor, Vec<UserRef>)> {
    let waiting = std::time::Instant::now();
    let locked = lock_conversation_and_actor(conn, call, conversation_id, others).await;
    let waited_ms = waiting.elapsed().as_secs_f64() * 1e3;
    tracing::Span::current().record("lock_wait_ms", waited_ms);
    locked
}

/// A retry of a call that already changed this conversation (same `x-request-id`, same actor): it is
/// answered as the first call was (`changed`), with the conversation as it is now, and changes nothing
/// again. Only for an actor who may still see the conversation; others are answered as for any change.
fn already_applied(locked: &Locked, situation: &Situation<'_>) -> Option<Changed<Conversation>> {
    (locked.already_applied && situation.actor_can_view).then(|| Changed {
        value: locked.conversation.clone(),
        changed: true,
    })
}

fn situation<'a>(actor: &Actor, locked: &'a Locked, conversation_id: &'a str) -> Situation<'a> {
    let assignee = locked.conversation.assignee_id.as_deref();
    Situation {
        conversation_id,
        current_assignee: assignee,
        version: locked.conversation.version,
        actor_can_view: may_view(&actor.as_user(), assignee, locked.actor_grants),
    }
}
