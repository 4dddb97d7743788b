//! The matrix's calls: for each RPC, the real gRPC call, made with a cell's metadata about a cell's
//! conversation, and its answer in a form the matrix can compare.

use assignment_service::pb;
use assignment_service::pb::access_group_service_client::AccessGroupServiceClient;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use assignment_service::pb::directory_service_client::DirectoryServiceClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::judge::{Answer, Detail};

/// The member tag the fixture's access groups let `org-view` view (view only, no reply).
pub const VIEWABLE_TAG: &str = "viewable";
/// The admin that ReassignConversation and BulkReassign move conversations to.
pub const REASSIGN_TO: &str = "admin-b";
/// The organizer AddOrganizers adds and the one RemoveOrganizers removes.
pub const ADDED: &str = "org-holder";
pub const REMOVED: &str = "org-view";
/// The user DeactivateUser deactivates.
pub const DEACTIVATED: &str = "deactivate-me";

/// A call's metadata: the campaign, the acting user and the bearer token, each when present; and a header
/// sent with these two values instead.
#[derive(Debug, Clone)]
pub struct CallMetadata {
    pub campaign: &'static str,
    pub actor: Option<String>,
    pub token: Option<String>,
    pub repeated: Option<(&'static str, [String; 2])>,
}

impl CallMetadata {
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("x-campaign-id", self.campaign.parse().unwrap());
        if let Some(actor) = &self.actor {
            metadata.insert("x-actor-id", actor.parse().unwrap());
        }
        if let Some(token) = &self.token {
            metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        if let Some((name, values)) = &self.repeated {
            metadata.remove(*name);
            for value in values {
                metadata.append(*name, value.parse().unwrap());
            }
        }
        request
    }
}

/// What a call is about.
#[derive(Debug, Clone)]
pub struct Subject {
    pub conversation: String,
    /// An access group (for the RPCs that name one).
    pub group: String,
    /// Whom assign calls assign to: the acting user themselves (or an admin when nobody acts).
    pub assignee: String,
    pub expected_version: Option<i64>,
    /// Unique to the call, for names and trigger ids.
    pub unique: String,
}

fn unary<T>(result: Result<Response<T>, Status>, detail: impl FnOnce(T) -> Detail) -> Answer {
    match result {
        Ok(response) => Answer::Ok(detail(response.into_inner())),
        Err(status) => Answer::Failed(status),
    }
}

fn nothing<T>(_: T) -> Detail {
    Detail::Nothing
}

/// A bulk stream's first error, or its item results.
async fn bulk<R>(
    result: Result<Response<Streaming<R>>, Status>,
    items_of: fn(R) -> Vec<pb::BulkItemResult>,
) -> Answer {
    let mut stream = match result {
        Ok(response) => response.into_inner(),
        Err(status) => return Answer::Failed(status),
    };
    let mut items = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => items.extend(items_of(message)),
            Ok(None) => return Answer::Items(items),
            Err(status) => return Answer::Failed(status),
        }
    }
}

fn options(assignee: &str) -> pb::BulkAssignOptions {
    pb::BulkAssignOptions {
        assignee_ids: vec![assignee.to_owned()],
        ..Default::default()
    }
}

fn batch(conversation: &str) -> pb::ConversationBatch {
    pb::ConversationBatch {
        conversation_ids: vec![conversation.to_owned()],
    }
}

fn view_only_tagged() -> (
    Option<pb::AccessGroupPermissions>,
    Option<pb::AccessGroupScope>,
) {
    (
        Some(pb::AccessGroupPermissions {
            view: true,
            reply: false,
        }),
        Some(pb::AccessGroupScope {
            member_tags: vec![VIEWABLE_TAG.into()],
            ..Default::default()
        }),
    )
}

/// Makes the real call of `method` as `caller` about `s`. Streaming RPCs send their options (when they
/// take any) and one batch holding the conversation.
pub async fn call(channel: &Channel, method: &str, caller: &CallMetadata, s: &Subject) -> Answer {
    let mut assignments = AssignmentServiceClient::new(channel.clone());
    let mut groups = AccessGroupServiceClient::new(channel.clone());
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let conversation_id = s.conversation.clone();
    let access_group_id = s.group.clone();
    match method {
        "AssignConversation" => unary(
            assignments
                .assign_conversation(caller.request(pb::AssignConversationRequest {
                    conversation_id,
                    assignee_id: s.assignee.clone(),
                    expected_version: s.expected_version,
                }))
                .await,
            nothing,
        ),
        "UnassignConversation" => unary(
            assignments
                .unassign_conversation(caller.request(pb::UnassignConversationRequest {
                    return_to_queue: false,
                    conversation_id,
                    expected_version: s.expected_version,
                }))
                .await,
            nothing,
        ),
        "ReassignConversation" => unary(
            assignments
                .reassign_conversation(caller.request(pb::ReassignConversationRequest {
                    conversation_id,
                    assignee_id: REASSIGN_TO.into(),
                    expected_version: s.expected_version,
                }))
                .await,
            nothing,
        ),
        "GetConversation" => unary(
            assignments
                .get_conversation(caller.request(pb::GetConversationRequest { conversation_id }))
                .await,
            nothing,
        ),
        "ListConversations" => list_conversations(&mut assignments, caller).await,
        "ResolveConversation" => unary(
            assignments
                .resolve_conversation(
                    caller.request(pb::ResolveConversationRequest { conversation_id }),
                )
                .await,
            nothing,
        ),
        "ReopenConversation" => unary(
            assignments
                .reopen_conversation(
                    caller.request(pb::ReopenConversationRequest { conversation_id }),
                )
                .await,
            nothing,
        ),
        "CheckReplyPermission" => unary(
            assignments
                .check_reply_permission(caller.request(pb::CheckReplyPermissionRequest {
                    conversation_id,
                    user_id: String::new(),
                }))
                .await,
            |reply| Detail::Reply(reply.reason()),
        ),
        "ListAssignmentHistory" => unary(
            assignments
                .list_assignment_history(caller.request(pb::ListAssignmentHistoryRequest {
                    conversation_id,
                    ..Default::default()
                }))
                .await,
            nothing,
        ),
        "AutoAssignConversation" => unary(
            assignments
                .auto_assign_conversation(caller.request(pb::AutoAssignConversationRequest {
                    priority: Default::default(),
                    conversation_id,
                    trigger_id: s.unique.clone(),
                    member_id: "member".into(),
                    member_tags: vec![],
                }))
                .await,
            nothing,
        ),
        "GetInboxSettings" => unary(
            assignments
                .get_inbox_settings(caller.request(pb::GetInboxSettingsRequest {}))
                .await,
            nothing,
        ),
        "UpdateInboxSettings" => unary(
            assignments
                .update_inbox_settings(caller.request(pb::UpdateInboxSettingsRequest {
                    auto_assign_enabled: Some(false),
                    ..Default::default()
                }))
                .await,
            nothing,
        ),
        // The acting user's own availability; with nobody acting, a system caller sets the assignee's.
        "SetAvailability" => unary(
            assignments
                .set_availability(caller.request(pb::SetAvailabilityRequest {
                    user_id: if caller.actor.is_some() {
                        String::new()
                    } else {
                        s.assignee.clone()
                    },
                    availability: pb::Availability::Away.into(),
                }))
                .await,
            nothing,
        ),
        // The actor's own reply; with nobody acting, a system reports the holder's.
        "RecordReply" => unary(
            assignments
                .record_reply(caller.request(pb::RecordReplyRequest {
                    conversation_id,
                    message_id: s.unique.clone(),
                    sender_id: if caller.actor.is_some() {
                        String::new()
                    } else {
                        s.assignee.clone()
                    },
                }))
                .await,
            nothing,
        ),
        // Another organizer's schedule: set, read (it was set by the cell before), deleted.
        "SetShiftSchedule" => unary(
            assignments
                .set_shift_schedule(caller.request(pb::SetShiftScheduleRequest {
                    user_id: ADDED.into(),
                    weekly: vec![pb::ShiftWindow {
                        weekday: pb::Weekday::Monday.into(),
                        start: "09:00".into(),
                        end: "17:00".into(),
                    }],
                    exceptions: vec![],
                }))
                .await,
            nothing,
        ),
        "GetShiftSchedule" => unary(
            assignments
                .get_shift_schedule(caller.request(pb::GetShiftScheduleRequest {
                    user_id: ADDED.into(),
                }))
                .await,
            nothing,
        ),
        "DeleteShiftSchedule" => unary(
            assignments
                .delete_shift_schedule(caller.request(pb::DeleteShiftScheduleRequest {
                    user_id: ADDED.into(),
                }))
                .await,
            nothing,
        ),
        "SetCapacity" => unary(
            assignments
                .set_capacity(caller.request(pb::SetCapacityRequest {
                    user_id: ADDED.into(),
                    capacity: Some(3),
                }))
                .await,
            nothing,
        ),
        // Opening the stream is the answer: the feed's filtering is tested in feed.rs.
        "WatchAssignmentEvents" => unary(
            assignments
                .watch_assignment_events(
                    caller.request(pb::WatchAssignmentEventsRequest::default()),
                )
                .await,
            nothing,
        ),
        "ListWaitingConversations" => unary(
            assignments
                .list_waiting_conversations(
                    caller.request(pb::ListWaitingConversationsRequest::default()),
                )
                .await,
            nothing,
        ),
        "PreviewAutoAssign" => unary(
            assignments
                .preview_auto_assign(caller.request(pb::PreviewAutoAssignRequest {
                    conversation_id: conversation_id.clone(),
                }))
                .await,
            nothing,
        ),
        "BulkAssign" => {
            use pb::bulk_assign_request::Payload;
            let messages = [
                Payload::Options(options(&s.assignee)),
                Payload::Conversations(batch(&conversation_id)),
            ]
            .map(|payload| pb::BulkAssignRequest {
                payload: Some(payload),
            });
            let result = assignments
                .bulk_assign(caller.request(tokio_stream::iter(messages)))
                .await;
            bulk(result, |m| match m.payload {
                Some(pb::bulk_assign_response::Payload::Results(r)) => r.items,
                _ => Vec::new(),
            })
            .await
        }
        "BulkUnassign" => {
            let messages = [pb::BulkUnassignRequest {
                conversations: Some(batch(&conversation_id)),
            }];
            let result = assignments
                .bulk_unassign(caller.request(tokio_stream::iter(messages)))
                .await;
            bulk(result, |m| match m.payload {
                Some(pb::bulk_unassign_response::Payload::Results(r)) => r.items,
                _ => Vec::new(),
            })
            .await
        }
        "BulkReassign" => {
            use pb::bulk_reassign_request::Payload;
            let messages = [
                Payload::Options(options(REASSIGN_TO)),
                Payload::Conversations(batch(&conversation_id)),
            ]
            .map(|payload| pb::BulkReassignRequest {
                payload: Some(payload),
            });
            let result = assignments
                .bulk_reassign(caller.request(tokio_stream::iter(messages)))
                .await;
            bulk(result, |m| match m.payload {
                Some(pb::bulk_reassign_response::Payload::Results(r)) => r.items,
                _ => Vec::new(),
            })
            .await
        }
        "CreateAccessGroup" => {
            let (permissions, scope) = view_only_tagged();
            unary(
                groups
                    .create_access_group(caller.request(pb::CreateAccessGroupRequest {
                        name: format!("created {}", s.unique),
                        permissions,
                        scope,
                        organizer_ids: vec![],
                    }))
                    .await,
                nothing,
            )
        }
        "GetAccessGroup" => unary(
            groups
                .get_access_group(caller.request(pb::GetAccessGroupRequest { access_group_id }))
                .await,
            nothing,
        ),
        "ListAccessGroups" => unary(
            groups
                .list_access_groups(caller.request(pb::ListAccessGroupsRequest::default()))
                .await,
            nothing,
        ),
        "UpdateAccessGroup" => unary(
            groups
                .update_access_group(caller.request(pb::UpdateAccessGroupRequest {
                    access_group_id,
                    name: Some(format!("renamed {}", s.unique)),
                    ..Default::default()
                }))
                .await,
            nothing,
        ),
        "DeleteAccessGroup" => unary(
            groups
                .delete_access_group(
                    caller.request(pb::DeleteAccessGroupRequest { access_group_id }),
                )
                .await,
            nothing,
        ),
        "AddOrganizers" => unary(
            groups
                .add_organizers(caller.request(pb::AddOrganizersRequest {
                    access_group_id,
                    organizer_ids: vec![ADDED.into()],
                }))
                .await,
            nothing,
        ),
        "RemoveOrganizers" => unary(
            groups
                .remove_organizers(caller.request(pb::RemoveOrganizersRequest {
                    access_group_id,
                    organizer_ids: vec![REMOVED.into()],
                }))
                .await,
            nothing,
        ),
        "CheckAccess" => unary(
            groups
                .check_access(caller.request(pb::CheckAccessRequest {
                    conversation_id,
                    user_id: String::new(),
                }))
                .await,
            |access| Detail::Access {
                view: access.can_view,
                reply: access.can_reply,
            },
        ),
        "ListEligibleAssignees" => unary(
            groups
                .list_eligible_assignees(caller.request(pb::ListEligibleAssigneesRequest {
                    conversation_ids: vec![conversation_id],
                    all_access_groups: true,
                }))
                .await,
            nothing,
        ),
        "UpsertUser" => unary(
            directory
                .upsert_user(caller.request(pb::UpsertUserRequest {
                    user_id: format!("synced-{}", s.unique),
                    role: pb::Role::Organizer.into(),
                    display_name: "Synced".into(),
                }))
                .await,
            nothing,
        ),
        "DeactivateUser" => unary(
            directory
                .deactivate_user(caller.request(pb::DeactivateUserRequest {
                    user_id: DEACTIVATED.into(),
                }))
                .await,
            nothing,
        ),
        "UpsertConversation" => unary(
            directory
                .upsert_conversation(caller.request(pb::UpsertConversationRequest {
                    conversation_id: format!("synced-{}", s.unique),
                    member_id: "member".into(),
                    member_tags: vec![],
                }))
                .await,
            nothing,
        ),
        method => panic!("no matrix row for {method}"),
    }
}

/// Every page of ListConversations.
async fn list_conversations(
    client: &mut AssignmentServiceClient<Channel>,
    caller: &CallMetadata,
) -> Answer {
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListConversationsRequest {
            page_size: 500,
            page_token,
            ..Default::default()
        };
        match client.list_conversations(caller.request(request)).await {
            Err(status) => return Answer::Failed(status),
            Ok(page) => {
                let page = page.into_inner();
                listed.extend(page.conversations.into_iter().map(|c| c.conversation_id));
                if page.next_page_token.is_empty() {
                    return Answer::Ok(Detail::Listed(listed));
                }
                page_token = page.next_page_token;
            }
        }
    }
}
