//! AutoAssignConversation and the inbox settings: the flow builder's path into AssignmentService.

use tonic::{Request, Response, Status};

use super::context::{actor_call, system_call};
use super::convert;
use crate::pb;
use crate::service::auto_assign::{self, Coalescer, TriggerRequest};
use crate::store::Store;

pub(super) async fn auto_assign(
    coalescer: &Coalescer,
    request: Request<pb::AutoAssignConversationRequest>,
) -> Result<Response<pb::AutoAssignConversationResponse>, Status> {
    let call = system_call(&request)?;
    let req = request.into_inner();
    let trigger = TriggerRequest {
        trigger_id: req.trigger_id,
        conversation_id: req.conversation_id,
        member_id: req.member_id,
        member_tags: req.member_tags,
    };
    let done = auto_assign::auto_assign(coalescer, &call, trigger).await?;
    let outcome = &done.decision.outcome;
    Ok(Response::new(pb::AutoAssignConversationResponse {
        outcome: convert::auto_outcome(outcome).into(),
        assignee_id: outcome.assignee().map(str::to_owned),
        message: outcome.message(),
        duplicate_trigger: done.decision.duplicate,
        conversation: Some(convert::conversation(done.conversation)),
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
    request: Request<pb::UpdateInboxSettingsRequest>,
) -> Result<Response<pb::UpdateInboxSettingsResponse>, Status> {
    let call = actor_call(&request)?;
    let enabled = request.into_inner().auto_assign_enabled;
    let settings = auto_assign::update_settings(store, &call, enabled).await?;
    Ok(Response::new(pb::UpdateInboxSettingsResponse {
        settings: Some(convert::inbox_settings(settings)),
    }))
}
