//! Auto-assignment and inbox settings: the flow builder's path into AssignmentService.

use tonic::{Request, Response, Status};

use super::context::{Caller, campaign_id, request_id};
use super::convert;
use crate::auto_assign::AutoAssigner;
use crate::domain::actor::require_admin;
use crate::domain::rotation::AutoOutcome;
use crate::domain::validate;
use crate::error::AppError;
use crate::pb;
use crate::store::{InboxSettingsRow, Store, TriggerInput, TriggerReply};

pub(super) async fn auto_assign(
    assigner: &AutoAssigner,
    request: Request<pb::AutoAssignConversationRequest>,
) -> Result<Response<pb::AutoAssignConversationResponse>, Status> {
    let campaign_id = campaign_id(request.metadata())?;
    let request_id = request_id(&request);
    let req = request.into_inner();
    validate::id("conversation_id", &req.conversation_id)?;
    validate::id("trigger_id", &req.trigger_id)?;
    let member_id = validate::optional_id("member_id", &req.member_id)?;
    let member_tags = validate::tags("member_tags", &req.member_tags)?;
    let trigger = TriggerInput {
        trigger_id: req.trigger_id.clone(),
        conversation_id: req.conversation_id.clone(),
        member_id,
        member_tags,
        request_id,
    };
    let (decision, conversation) = match assigner.submit(&campaign_id, trigger).await? {
        TriggerReply::Done(decision, conversation) => (decision, conversation),
        TriggerReply::UnknownConversation => {
            return Err(AppError::not_found(
                "CONVERSATION_NOT_FOUND",
                format!(
                    "conversation {:?} is unknown in campaign {campaign_id:?}; pass member_id (and member_tags) \
                     so its first inbound message creates it",
                    req.conversation_id
                ),
            )
            .into());
        }
        TriggerReply::TriggerReused { first_conversation } => {
            return Err(AppError::precondition(
                "TRIGGER_ID_REUSED",
                format!(
                    "trigger_id {:?} was first delivered for conversation {first_conversation:?}, not {:?}; \
                     give each inbound message its own trigger id",
                    req.trigger_id, req.conversation_id
                ),
            )
            .into());
        }
    };
    let outcome = match decision.outcome {
        AutoOutcome::Assigned(_) => pb::AutoAssignOutcome::Assigned,
        AutoOutcome::AlreadyAssigned(_) => pb::AutoAssignOutcome::AlreadyAssigned,
        AutoOutcome::NoEligibleOrganizer => pb::AutoAssignOutcome::NoEligibleOrganizer,
        AutoOutcome::Disabled => pb::AutoAssignOutcome::Disabled,
    };
    Ok(Response::new(pb::AutoAssignConversationResponse {
        outcome: outcome.into(),
        assignee_id: decision.outcome.assignee().map(str::to_owned),
        message: decision.outcome.message(),
        duplicate_trigger: decision.duplicate,
        conversation: Some(convert::conversation(conversation)),
    }))
}

fn settings(row: Option<InboxSettingsRow>) -> Option<pb::InboxSettings> {
    Some(match row {
        Some(row) => pb::InboxSettings {
            auto_assign_enabled: row.auto_assign_enabled,
            updated_at: Some(convert::timestamp(row.updated_at)),
            updated_by: row.updated_by,
        },
        // Never configured: everything off.
        None => pb::InboxSettings::default(),
    })
}

pub(super) async fn get_settings(
    store: &Store,
    request: Request<pb::GetInboxSettingsRequest>,
) -> Result<Response<pb::GetInboxSettingsResponse>, Status> {
    let caller = Caller::from_request(store, &request).await?;
    let row = store.inbox_settings(&caller.campaign_id).await?;
    Ok(Response::new(pb::GetInboxSettingsResponse {
        settings: settings(row),
    }))
}

pub(super) async fn update_settings(
    store: &Store,
    request: Request<pb::UpdateInboxSettingsRequest>,
) -> Result<Response<pb::UpdateInboxSettingsResponse>, Status> {
    let caller = Caller::from_request(store, &request).await?;
    require_admin(&caller.actor, "change inbox settings")?;
    let req = request.into_inner();
    let row = match req.auto_assign_enabled {
        Some(enabled) => {
            store
                .update_inbox_settings(&caller.campaign_id, enabled, &caller.actor.user_id)
                .await?
        }
        // Nothing to change: answer with the settings as they are.
        None => match store.inbox_settings(&caller.campaign_id).await? {
            Some(row) => row,
            None => {
                return Ok(Response::new(pb::UpdateInboxSettingsResponse {
                    settings: settings(None),
                }));
            }
        },
    };
    Ok(Response::new(pb::UpdateInboxSettingsResponse {
        settings: settings(Some(row)),
    }))
}
