//! AutoAssignConversation and the inbox settings: the flow builder's path into AssignmentService.

use tonic::{Request, Response, Status};

use super::context::{actor_call, caller, system_call};
use super::convert;
use crate::error::AppError;
use crate::pb;
use crate::service::auto_assign::{self, Coalescer, TriggerRequest};
use crate::service::{AfterCommit, availability};
use crate::store::Store;

pub(super) async fn auto_assign(
    store: &Store,
    after: &AfterCommit,
    coalescer: &Coalescer,
    request: Request<pb::AutoAssignConversationRequest>,
) -> Result<Response<pb::AutoAssignConversationResponse>, Status> {
    let call = system_call(&request)?;
    let req = request.into_inner();
    let priority = convert::priority_from_pb(req.priority)
        .map_err(|field| AppError::invalid(field, format!("{field} is not a known value")))?;
    let trigger = TriggerRequest {
        trigger_id: req.trigger_id,
        conversation_id: req.conversation_id,
        member_id: req.member_id,
        member_tags: req.member_tags,
        priority,
    };
    let done = auto_assign::auto_assign(store, after, coalescer, &call, trigger).await?;
    let outcome = &done.decision.outcome;
    let mut message = outcome.message();
    if let Some((holder, why)) = &done.holder_unreachable {
        message.push_str(&format!(" But {}: ", why.message(holder)));
        if done.returned {
            message.push_str("it went back to the front of the waiting queue for someone who can.");
        } else {
            message.push_str(&format!(
                "the campaign keeps such conversations with their holder ({} KEEP).",
                why.policy()
            ));
        }
    }
    Ok(Response::new(pb::AutoAssignConversationResponse {
        outcome: convert::auto_outcome(outcome).into(),
        assignee_id: outcome.assignee().map(str::to_owned),
        message,
        holder_unreachable_cause: done
            .holder_unreachable
            .map(|(_, why)| why.cause().to_owned())
            .unwrap_or_default(),
        duplicate_trigger: done.decision.duplicate,
        conversation: Some(convert::conversation(done.conversation)),
        queue_position: done.queue_position,
    }))
}

pub(super) async fn get_settings(
    store: &Store,
    request: Request<pb::GetInboxSettingsRequest>,
) -> Result<Response<pb::GetInboxSettingsResponse>, Status> {
    let call = actor_call(&request)?;
    let settings = auto_assign::get_settings(store, &call).await?;
    Ok(Response::new(pb::GetInboxSettingsResponse {
        settings: Some(convert::inbox_settings(settings)),
    }))
}

pub(super) async fn update_settings(
    store: &Store,
    after: &AfterCommit,
    request: Request<pb::UpdateInboxSettingsRequest>,
) -> Result<Response<pb::UpdateInboxSettingsResponse>, Status> {
    let call = actor_call(&request)?;
    let change = convert::settings_change(request.get_ref())
        .map_err(|field| AppError::invalid(field, format!("{field} is not a known value")))?;
    let settings = auto_assign::update_settings(store, after, &call, change).await?;
    Ok(Response::new(pb::UpdateInboxSettingsResponse {
        settings: Some(convert::inbox_settings(settings)),
    }))
}

pub(super) async fn set_capacity(
    store: &Store,
    after: &AfterCommit,
    request: Request<pb::SetCapacityRequest>,
) -> Result<Response<pb::SetCapacityResponse>, Status> {
    let call = actor_call(&request)?;
    let req = request.into_inner();
    let user = auto_assign::set_capacity(store, after, &call, &req.user_id, req.capacity).await?;
    Ok(Response::new(pb::SetCapacityResponse {
        user: Some(convert::user(user)),
    }))
}

pub(super) async fn preview(
    store: &Store,
    request: Request<pb::PreviewAutoAssignRequest>,
) -> Result<Response<pb::PreviewAutoAssignResponse>, Status> {
    let call = actor_call(&request)?;
    let req = request.into_inner();
    let preview = auto_assign::preview(store, &call, &req.conversation_id).await?;
    Ok(Response::new(pb::PreviewAutoAssignResponse {
        next_assignee_id: preview.next_assignee_id,
        auto_assign_enabled: preview
            .settings
            .as_ref()
            .is_some_and(|s| s.auto_assign_enabled),
        settings: Some(convert::inbox_settings(preview.settings)),
        candidates: preview
            .candidates
            .into_iter()
            .map(convert::candidate)
            .collect(),
        reply_due_at: preview.reply_due_at.map(convert::timestamp),
        holder_unreachable_cause: preview
            .holder_unreachable
            .as_ref()
            .map(|(_, why)| why.cause().to_owned())
            .unwrap_or_default(),
        holder_unreachable_message: preview
            .holder_unreachable
            .map(|(holder, why)| why.message(&holder))
            .unwrap_or_default(),
    }))
}

/// SetAvailability: a user acting (`x-actor-id`), or else a system caller. A user-scoped token must name
/// its actor: only a system caller may set anyone's availability without one.
pub(super) async fn set_availability(
    store: &Store,
    after: &AfterCommit,
    request: Request<pb::SetAvailabilityRequest>,
) -> Result<Response<pb::SetAvailabilityResponse>, Status> {
    let setter = caller(&request)?;
    let req = request.into_inner();
    let availability = convert::availability_from_pb(req.availability);
    let done =
        availability::set_availability(store, after, &setter, &req.user_id, availability).await?;
    Ok(Response::new(pb::SetAvailabilityResponse {
        user: Some(convert::user(done.value)),
        changed: done.changed,
    }))
}

pub(super) async fn list_waiting(
    store: &Store,
    request: Request<pb::ListWaitingConversationsRequest>,
) -> Result<Response<pb::ListWaitingConversationsResponse>, Status> {
    let call = actor_call(&request)?;
    let req = request.into_inner();
    let page = auto_assign::list_waiting(store, &call, req.page_size, &req.page_token).await?;
    let now = chrono::Utc::now();
    Ok(Response::new(pb::ListWaitingConversationsResponse {
        conversations: page
            .items
            .into_iter()
            .map(|waiting| pb::WaitingConversation {
                position: waiting.rank,
                waiting_since: Some(convert::timestamp(waiting.waiting_since)),
                waiting_seconds: (now - waiting.waiting_since).num_milliseconds().max(0) as f64
                    / 1e3,
                priority: convert::priority_to_pb(waiting.priority).into(),
                conversation: Some(convert::conversation(waiting.conversation)),
            })
            .collect(),
        next_page_token: page.next_page_token,
    }))
}
