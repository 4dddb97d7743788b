//! AssignmentService: assign, unassign, reassign, resolve and reopen one conversation; read and list them.

use tonic::{Request, Response, Status, Streaming};

use super::bulk::{self, BulkStream};
use super::context::Caller;
use super::{convert, inbox};
use crate::auto_assign::AutoAssigner;
use crate::domain::actor::{require_admin, require_self_or_admin};
use crate::domain::assignment::{
    Plan, Situation, check_version, plan_assign, plan_reassign, plan_status_change, plan_unassign,
};
use crate::domain::bulk::BulkAction;
use crate::domain::model::{Actor, AssignmentSource, ConversationStatus, UserRef};
use crate::domain::reply::{can_view, reply_permission};
use crate::domain::{paging, validate};
use crate::error::{AppError, AppResult};
use crate::pb::{self, assignment_service_server::AssignmentService};
use crate::store::{ConversationFilter, ConversationRow, Store, ViewedConversation, Write};

pub struct AssignmentApi {
    store: Store,
    auto_assigner: AutoAssigner,
}

pub(super) fn conversation_not_found(conversation_id: &str, campaign_id: &str) -> AppError {
    AppError::not_found(
        "CONVERSATION_NOT_FOUND",
        format!(
            "conversation {conversation_id:?} does not exist in campaign {campaign_id:?}; \
             sync it with DirectoryService.UpsertConversation first"
        ),
    )
}

impl AssignmentApi {
    pub fn new(store: Store, auto_assigner: AutoAssigner) -> Self {
        Self {
            store,
            auto_assigner,
        }
    }

    async fn caller<T>(&self, request: &Request<T>) -> AppResult<Caller> {
        Caller::from_request(&self.store, request).await
    }

    /// Locks the conversation, applies `rule` to its current state and writes the outcome.
    async fn change_assignment<R>(
        &self,
        caller: &Caller,
        conversation_id: &str,
        target_id: Option<&str>,
        expected_version: Option<i64>,
        rule: R,
    ) -> AppResult<(ConversationRow, bool)>
    where
        R: FnOnce(&Actor, &Situation<'_>, Option<&UserRef>) -> AppResult<Plan>,
    {
        validate::id("conversation_id", conversation_id)?;
        let actor = &caller.actor;
        self.store
            .change_conversation(
                caller.change_context(),
                conversation_id,
                target_id,
                AssignmentSource::Manual,
                |locked| {
                    let current = &locked.conversation;
                    check_version(conversation_id, expected_version, current.version)?;
                    let situation = Situation {
                        conversation_id,
                        current_assignee: current.assignee_id.as_deref(),
                        actor_can_view: locked.actor_can_view,
                    };
                    Ok(match rule(actor, &situation, locked.target().as_ref())? {
                        Plan::Unchanged => Write::Nothing,
                        Plan::Change { action, to } => Write::Assignee { action, to },
                    })
                },
            )
            .await?
            .ok_or_else(|| conversation_not_found(conversation_id, &caller.campaign_id))
    }

    async fn change_status(
        &self,
        caller: &Caller,
        conversation_id: &str,
        wanted: ConversationStatus,
    ) -> AppResult<(ConversationRow, bool)> {
        validate::id("conversation_id", conversation_id)?;
        let actor = &caller.actor;
        self.store
            .change_conversation(
                caller.change_context(),
                conversation_id,
                None,
                AssignmentSource::Manual,
                |locked| {
                    let current = &locked.conversation;
                    let situation = Situation {
                        conversation_id,
                        current_assignee: current.assignee_id.as_deref(),
                        actor_can_view: locked.actor_can_view,
                    };
                    let status = ConversationStatus::from_db(&current.status);
                    Ok(if plan_status_change(actor, &situation, status, wanted)? {
                        Write::Status(wanted)
                    } else {
                        Write::Nothing
                    })
                },
            )
            .await?
            .ok_or_else(|| conversation_not_found(conversation_id, &caller.campaign_id))
    }

    /// The conversation as the caller sees it, refused when they may not see it.
    async fn visible_conversation(
        &self,
        caller: &Caller,
        conversation_id: &str,
    ) -> AppResult<ViewedConversation> {
        validate::id("conversation_id", conversation_id)?;
        let viewed = self
            .store
            .view_conversation(&caller.campaign_id, conversation_id, &caller.actor.user_id)
            .await?
            .ok_or_else(|| conversation_not_found(conversation_id, &caller.campaign_id))?;
        let actor = UserRef {
            user_id: caller.actor.user_id.clone(),
            role: caller.actor.role,
            active: true,
        };
        if !can_view(
            &actor,
            viewed.conversation.assignee_id.as_deref(),
            viewed.group_view,
        ) {
            return Err(AppError::denied(
                "NO_VIEW_ACCESS",
                format!(
                    "no access group lets you view conversation {conversation_id:?}; ask an admin"
                ),
            ));
        }
        Ok(viewed)
    }
}

#[tonic::async_trait]
impl AssignmentService for AssignmentApi {
    async fn assign_conversation(
        &self,
        request: Request<pb::AssignConversationRequest>,
    ) -> Result<Response<pb::AssignConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        validate::id("assignee_id", &req.assignee_id)?;
        let (row, changed) = self
            .change_assignment(
                &caller,
                &req.conversation_id,
                Some(&req.assignee_id),
                req.expected_version,
                |actor, situation, target| plan_assign(actor, situation, &req.assignee_id, target),
            )
            .await?;
        Ok(Response::new(pb::AssignConversationResponse {
            conversation: Some(convert::conversation(row)),
            changed,
        }))
    }

    async fn unassign_conversation(
        &self,
        request: Request<pb::UnassignConversationRequest>,
    ) -> Result<Response<pb::UnassignConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (row, changed) = self
            .change_assignment(
                &caller,
                &req.conversation_id,
                None,
                req.expected_version,
                |actor, situation, _| plan_unassign(actor, situation),
            )
            .await?;
        Ok(Response::new(pb::UnassignConversationResponse {
            conversation: Some(convert::conversation(row)),
            changed,
        }))
    }

    async fn reassign_conversation(
        &self,
        request: Request<pb::ReassignConversationRequest>,
    ) -> Result<Response<pb::ReassignConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        validate::id("assignee_id", &req.assignee_id)?;
        let (row, changed) = self
            .change_assignment(
                &caller,
                &req.conversation_id,
                Some(&req.assignee_id),
                req.expected_version,
                |actor, situation, target| {
                    plan_reassign(actor, situation, &req.assignee_id, target)
                },
            )
            .await?;
        Ok(Response::new(pb::ReassignConversationResponse {
            conversation: Some(convert::conversation(row)),
            changed,
        }))
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let viewed = self
            .visible_conversation(&caller, &req.conversation_id)
            .await?;
        Ok(Response::new(pb::GetConversationResponse {
            conversation: Some(convert::conversation(viewed.conversation)),
        }))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        const TOKEN_KIND: &str = "conversations";
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let assignee_id = validate::optional_id("assignee_id", &req.assignee_id)?;
        if assignee_id.is_some() && req.unassigned {
            return Err(AppError::invalid(
                "unassigned",
                "set either assignee_id or unassigned, not both: no conversation can match both",
            )
            .into());
        }
        let filter = ConversationFilter {
            assignee_id,
            unassigned: req.unassigned,
            status: convert::status_filter_from_pb(req.status)?,
        };
        let limit = paging::page_size(req.page_size)?;
        let after = paging::decode_token(TOKEN_KIND, &req.page_token)?;
        let organizer = (!caller.actor.is_admin()).then_some(caller.actor.user_id.as_str());
        let mut rows = self
            .store
            .list_conversations(
                &caller.campaign_id,
                organizer,
                &filter,
                after.as_deref(),
                limit + 1,
            )
            .await?;
        let next_page_token = next_token(&mut rows, limit, |row| {
            paging::encode_token(TOKEN_KIND, &row.conversation_id)
        });
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: rows.into_iter().map(convert::conversation).collect(),
            next_page_token,
        }))
    }

    async fn resolve_conversation(
        &self,
        request: Request<pb::ResolveConversationRequest>,
    ) -> Result<Response<pb::ResolveConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (row, changed) = self
            .change_status(&caller, &req.conversation_id, ConversationStatus::Resolved)
            .await?;
        Ok(Response::new(pb::ResolveConversationResponse {
            conversation: Some(convert::conversation(row)),
            changed,
        }))
    }

    async fn reopen_conversation(
        &self,
        request: Request<pb::ReopenConversationRequest>,
    ) -> Result<Response<pb::ReopenConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (row, changed) = self
            .change_status(&caller, &req.conversation_id, ConversationStatus::Open)
            .await?;
        Ok(Response::new(pb::ReopenConversationResponse {
            conversation: Some(convert::conversation(row)),
            changed,
        }))
    }

    async fn check_reply_permission(
        &self,
        request: Request<pb::CheckReplyPermissionRequest>,
    ) -> Result<Response<pb::CheckReplyPermissionResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        validate::id("conversation_id", &req.conversation_id)?;
        let user = subject_user(&self.store, &caller, &req.user_id).await?;
        let viewed = self
            .store
            .view_conversation(&caller.campaign_id, &req.conversation_id, &user.user_id)
            .await?
            .ok_or_else(|| conversation_not_found(&req.conversation_id, &caller.campaign_id))?;
        let assignee = viewed.conversation.assignee_id;
        // Organizers only ask about themselves; one who may not see the conversation learns nothing of it.
        if !caller.actor.is_admin() && !can_view(&user, assignee.as_deref(), viewed.group_view) {
            return Err(AppError::denied(
                "NO_VIEW_ACCESS",
                format!(
                    "no access group lets you view conversation {:?}; ask an admin",
                    req.conversation_id
                ),
            )
            .into());
        }
        let decision = reply_permission(&user, assignee.as_deref(), viewed.group_reply);
        Ok(Response::new(pb::CheckReplyPermissionResponse {
            allowed: decision.allowed(),
            reason: convert::reply_reason(decision).into(),
            message: decision.message(assignee.as_deref()),
            assignee_id: assignee,
        }))
    }

    async fn list_assignment_history(
        &self,
        request: Request<pb::ListAssignmentHistoryRequest>,
    ) -> Result<Response<pb::ListAssignmentHistoryResponse>, Status> {
        const TOKEN_KIND: &str = "events";
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let conversation_id = validate::optional_id("conversation_id", &req.conversation_id)?;
        match &conversation_id {
            Some(id) => {
                self.visible_conversation(&caller, id).await?;
            }
            None => require_admin(
                &caller.actor,
                "list the whole campaign's history; pass a conversation_id",
            )?,
        }
        let limit = paging::page_size(req.page_size)?;
        let after = paging::decode_token(TOKEN_KIND, &req.page_token)?
            .map(|key| key.parse::<i64>())
            .transpose()
            .map_err(|_| {
                AppError::invalid("page_token", "page_token is not one this RPC returned")
            })?;
        let mut rows = self
            .store
            .list_events(
                &caller.campaign_id,
                conversation_id.as_deref(),
                after,
                limit + 1,
            )
            .await?;
        let next_page_token = next_token(&mut rows, limit, |row| {
            paging::encode_token(TOKEN_KIND, &row.event_id.to_string())
        });
        Ok(Response::new(pb::ListAssignmentHistoryResponse {
            events: rows.into_iter().map(convert::event).collect(),
            next_page_token,
        }))
    }

    type BulkAssignStream = BulkStream<pb::BulkAssignResponse>;
    type BulkUnassignStream = BulkStream<pb::BulkUnassignResponse>;
    type BulkReassignStream = BulkStream<pb::BulkReassignResponse>;

    async fn bulk_assign(
        &self,
        request: Request<Streaming<pb::BulkAssignRequest>>,
    ) -> Result<Response<Self::BulkAssignStream>, Status> {
        bulk::run(&self.store, BulkAction::Assign, request).await
    }

    async fn bulk_unassign(
        &self,
        request: Request<Streaming<pb::BulkUnassignRequest>>,
    ) -> Result<Response<Self::BulkUnassignStream>, Status> {
        bulk::run(&self.store, BulkAction::Unassign, request).await
    }

    async fn bulk_reassign(
        &self,
        request: Request<Streaming<pb::BulkReassignRequest>>,
    ) -> Result<Response<Self::BulkReassignStream>, Status> {
        bulk::run(&self.store, BulkAction::Reassign, request).await
    }

    async fn auto_assign_conversation(
        &self,
        request: Request<pb::AutoAssignConversationRequest>,
    ) -> Result<Response<pb::AutoAssignConversationResponse>, Status> {
        inbox::auto_assign(&self.auto_assigner, request).await
    }

    async fn get_inbox_settings(
        &self,
        request: Request<pb::GetInboxSettingsRequest>,
    ) -> Result<Response<pb::GetInboxSettingsResponse>, Status> {
        inbox::get_settings(&self.store, request).await
    }

    async fn update_inbox_settings(
        &self,
        request: Request<pb::UpdateInboxSettingsRequest>,
    ) -> Result<Response<pb::UpdateInboxSettingsResponse>, Status> {
        inbox::update_settings(&self.store, request).await
    }
}

/// The user a permission check is about: the actor by default; only admins may ask about others.
pub(super) async fn subject_user(
    store: &Store,
    caller: &Caller,
    user_id: &str,
) -> AppResult<UserRef> {
    let Some(user_id) = validate::optional_id("user_id", user_id)? else {
        return Ok(UserRef {
            user_id: caller.actor.user_id.clone(),
            role: caller.actor.role,
            active: true,
        });
    };
    require_self_or_admin(&caller.actor, &user_id)?;
    store
        .find_user(&caller.campaign_id, &user_id)
        .await?
        .map(|row| row.to_ref())
        .ok_or_else(|| {
            AppError::not_found(
                "USER_NOT_FOUND",
                format!(
                    "user {user_id:?} is not a user of campaign {:?}",
                    caller.campaign_id
                ),
            )
        })
}

/// Rows were fetched with one extra to learn whether another page follows; drop it and name the token.
pub(super) fn next_token<T>(rows: &mut Vec<T>, limit: i64, token: impl Fn(&T) -> String) -> String {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}
