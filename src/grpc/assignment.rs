//! AssignmentService: each handler decodes the request, calls one use case and encodes the reply.

use std::time::Duration;

use tonic::{Request, Response, Status, Streaming};

use super::bulk::{self, BulkStream};
use super::context::actor_call;
use super::feed::{self, WatchStream};
use super::{auto_assign, convert, replies, shifts};
use crate::domain::assignment::AssigneeRequest;
use crate::domain::bulk::BulkAction;
use crate::domain::model::ConversationStatus;
use crate::pb::{self, assignment_service_server::AssignmentService};
use crate::service::AfterCommit;
use crate::service::assignment::{change_assignee, change_status};
use crate::service::auto_assign::Coalescer;
use crate::service::conversations::{self, ListRequest};
use crate::service::feed::Feed;
use crate::store::Store;

pub struct AssignmentApi {
    store: Store,
    /// Runs AutoAssignConversation's triggers in batches.
    coalescer: Coalescer,
    /// The hub WatchAssignmentEvents subscribes to.
    feed: Feed,
    /// Told by the use cases of what they changed.
    after: AfterCommit,
    /// How long a bulk stream may go without a request message.
    stream_idle: Duration,
}

impl AssignmentApi {
    pub fn new(
        store: Store,
        coalescer: Coalescer,
        feed: Feed,
        after: AfterCommit,
        stream_idle: Duration,
    ) -> Self {
        Self {
            store,
            coalescer,
            feed,
            after,
            stream_idle,
        }
    }
}

#[tonic::async_trait]
impl AssignmentService for AssignmentApi {
    async fn assign_conversation(
        &self,
        request: Request<pb::AssignConversationRequest>,
    ) -> Result<Response<pb::AssignConversationResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let to = AssigneeRequest::Assign {
            to: &req.assignee_id,
        };
        let done = change_assignee(
            &self.store,
            &self.after,
            &call,
            &req.conversation_id,
            to,
            req.expected_version,
        )
        .await?;
        Ok(Response::new(pb::AssignConversationResponse {
            conversation: Some(convert::conversation(done.value)),
            changed: done.changed,
        }))
    }

    async fn unassign_conversation(
        &self,
        request: Request<pb::UnassignConversationRequest>,
    ) -> Result<Response<pb::UnassignConversationResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let done = change_assignee(
            &self.store,
            &self.after,
            &call,
            &req.conversation_id,
            if req.return_to_queue {
                AssigneeRequest::Release
            } else {
                AssigneeRequest::Unassign
            },
            req.expected_version,
        )
        .await?;
        Ok(Response::new(pb::UnassignConversationResponse {
            conversation: Some(convert::conversation(done.value)),
            changed: done.changed,
        }))
    }

    async fn reassign_conversation(
        &self,
        request: Request<pb::ReassignConversationRequest>,
    ) -> Result<Response<pb::ReassignConversationResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let to = AssigneeRequest::Reassign {
            to: &req.assignee_id,
        };
        let done = change_assignee(
            &self.store,
            &self.after,
            &call,
            &req.conversation_id,
            to,
            req.expected_version,
        )
        .await?;
        Ok(Response::new(pb::ReassignConversationResponse {
            conversation: Some(convert::conversation(done.value)),
            changed: done.changed,
        }))
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let conversation = conversations::get(&self.store, &call, &req.conversation_id).await?;
        Ok(Response::new(pb::GetConversationResponse {
            conversation: Some(convert::conversation(conversation)),
        }))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let list = ListRequest {
            status: convert::status_filter_from_pb(req.status),
            assignee_id: req.assignee_id,
            unassigned: req.unassigned,
            held_by_unreachable: req.held_by_unreachable,
            page_size: req.page_size,
            page_token: req.page_token,
        };
        let page = conversations::list(&self.store, &call, &list).await?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: page.items.into_iter().map(convert::conversation).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn resolve_conversation(
        &self,
        request: Request<pb::ResolveConversationRequest>,
    ) -> Result<Response<pb::ResolveConversationResponse>, Status> {
        let call = actor_call(&request)?;
        let id = request.into_inner().conversation_id;
        let resolved = ConversationStatus::Resolved;
        let done = change_status(&self.store, &self.after, &call, &id, resolved).await?;
        Ok(Response::new(pb::ResolveConversationResponse {
            conversation: Some(convert::conversation(done.value)),
            changed: done.changed,
        }))
    }

    async fn reopen_conversation(
        &self,
        request: Request<pb::ReopenConversationRequest>,
    ) -> Result<Response<pb::ReopenConversationResponse>, Status> {
        let call = actor_call(&request)?;
        let id = request.into_inner().conversation_id;
        let open = ConversationStatus::Open;
        let done = change_status(&self.store, &self.after, &call, &id, open).await?;
        Ok(Response::new(pb::ReopenConversationResponse {
            conversation: Some(convert::conversation(done.value)),
            changed: done.changed,
        }))
    }

    async fn check_reply_permission(
        &self,
        request: Request<pb::CheckReplyPermissionRequest>,
    ) -> Result<Response<pb::CheckReplyPermissionResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let check = conversations::check_reply_permission(
            &self.store,
            &call,
            &req.conversation_id,
            &req.user_id,
        )
        .await?;
        Ok(Response::new(pb::CheckReplyPermissionResponse {
            allowed: check.decision.allowed(),
            reason: convert::reply_reason(check.decision).into(),
            message: check.decision.message(check.assignee_id.as_deref()),
            assignee_id: check.assignee_id,
        }))
    }

    async fn list_assignment_history(
        &self,
        request: Request<pb::ListAssignmentHistoryRequest>,
    ) -> Result<Response<pb::ListAssignmentHistoryResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let page = conversations::history(
            &self.store,
            &call,
            &req.conversation_id,
            req.page_size,
            &req.page_token,
        )
        .await?;
        Ok(Response::new(pb::ListAssignmentHistoryResponse {
            events: page.items.into_iter().map(convert::event).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type BulkAssignStream = BulkStream<pb::BulkAssignResponse>;
    type BulkUnassignStream = BulkStream<pb::BulkUnassignResponse>;
    type BulkReassignStream = BulkStream<pb::BulkReassignResponse>;

    async fn bulk_assign(
        &self,
        request: Request<Streaming<pb::BulkAssignRequest>>,
    ) -> Result<Response<Self::BulkAssignStream>, Status> {
        bulk::run(
            &self.store,
            BulkAction::Assign,
            self.stream_idle,
            self.after.clone(),
            request,
        )
        .await
    }

    async fn bulk_unassign(
        &self,
        request: Request<Streaming<pb::BulkUnassignRequest>>,
    ) -> Result<Response<Self::BulkUnassignStream>, Status> {
        bulk::run(
            &self.store,
            BulkAction::Unassign,
            self.stream_idle,
            self.after.clone(),
            request,
        )
        .await
    }

    async fn bulk_reassign(
        &self,
        request: Request<Streaming<pb::BulkReassignRequest>>,
    ) -> Result<Response<Self::BulkReassignStream>, Status> {
        bulk::run(
            &self.store,
            BulkAction::Reassign,
            self.stream_idle,
            self.after.clone(),
            request,
        )
        .await
    }

    async fn auto_assign_conversation(
        &self,
        request: Request<pb::AutoAssignConversationRequest>,
    ) -> Result<Response<pb::AutoAssignConversationResponse>, Status> {
        auto_assign::auto_assign(&self.store, &self.after, &self.coalescer, request).await
    }

    async fn get_inbox_settings(
        &self,
        request: Request<pb::GetInboxSettingsRequest>,
    ) -> Result<Response<pb::GetInboxSettingsResponse>, Status> {
        auto_assign::get_settings(&self.store, request).await
    }

    async fn update_inbox_settings(
        &self,
        request: Request<pb::UpdateInboxSettingsRequest>,
    ) -> Result<Response<pb::UpdateInboxSettingsResponse>, Status> {
        auto_assign::update_settings(&self.store, &self.after, request).await
    }

    async fn set_availability(
        &self,
        request: Request<pb::SetAvailabilityRequest>,
    ) -> Result<Response<pb::SetAvailabilityResponse>, Status> {
        auto_assign::set_availability(&self.store, &self.after, request).await
    }

    async fn set_capacity(
        &self,
        request: Request<pb::SetCapacityRequest>,
    ) -> Result<Response<pb::SetCapacityResponse>, Status> {
        auto_assign::set_capacity(&self.store, &self.after, request).await
    }

    type WatchAssignmentEventsStream = WatchStream;

    async fn watch_assignment_events(
        &self,
        request: Request<pb::WatchAssignmentEventsRequest>,
    ) -> Result<Response<Self::WatchAssignmentEventsStream>, Status> {
        feed::watch(&self.store, &self.feed, request).await
    }

    async fn list_waiting_conversations(
        &self,
        request: Request<pb::ListWaitingConversationsRequest>,
    ) -> Result<Response<pb::ListWaitingConversationsResponse>, Status> {
        auto_assign::list_waiting(&self.store, request).await
    }

    async fn preview_auto_assign(
        &self,
        request: Request<pb::PreviewAutoAssignRequest>,
    ) -> Result<Response<pb::PreviewAutoAssignResponse>, Status> {
        auto_assign::preview(&self.store, request).await
    }

    async fn record_reply(
        &self,
        request: Request<pb::RecordReplyRequest>,
    ) -> Result<Response<pb::RecordReplyResponse>, Status> {
        replies::record_reply(&self.store, &self.after, request).await
    }

    async fn set_shift_schedule(
        &self,
        request: Request<pb::SetShiftScheduleRequest>,
    ) -> Result<Response<pb::SetShiftScheduleResponse>, Status> {
        shifts::set_shift_schedule(&self.store, &self.after, request).await
    }

    async fn get_shift_schedule(
        &self,
        request: Request<pb::GetShiftScheduleRequest>,
    ) -> Result<Response<pb::GetShiftScheduleResponse>, Status> {
        shifts::get_shift_schedule(&self.store, request).await
    }

    async fn delete_shift_schedule(
        &self,
        request: Request<pb::DeleteShiftScheduleRequest>,
    ) -> Result<Response<pb::DeleteShiftScheduleResponse>, Status> {
        shifts::delete_shift_schedule(&self.store, &self.after, request).await
    }
}
