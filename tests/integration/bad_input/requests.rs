//! Short constructors for the requests the bad-input cases send.

use assignment_service::pb;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::Expect::Invalid;
use super::{Case, Req};

pub fn bad(name: &'static str, request: Req, fields: &'static [&'static str]) -> Case {
    Case::new(name, request, Invalid(fields))
}

pub fn long() -> String {
    "x".repeat(129)
}

pub fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("id-{i}")).collect()
}

pub fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// A page token as the server makes them, for `kind` (the RPC it belongs to) and `key`.
pub fn token(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

pub fn get(id: &str) -> Req {
    Req::Get(pb::GetConversationRequest {
        conversation_id: id.into(),
    })
}

pub fn assign(conversation: &str, assignee: &str) -> Req {
    Req::Assign(pb::AssignConversationRequest {
        conversation_id: conversation.into(),
        assignee_id: assignee.into(),
        expected_version: None,
    })
}

pub fn reassign(conversation: &str, assignee: &str) -> Req {
    Req::Reassign(pb::ReassignConversationRequest {
        conversation_id: conversation.into(),
        assignee_id: assignee.into(),
        expected_version: None,
    })
}

pub fn unassign(conversation: &str) -> Req {
    Req::Unassign(pb::UnassignConversationRequest {
        return_to_queue: false,
        conversation_id: conversation.into(),
        expected_version: None,
    })
}

pub fn resolve(conversation: &str) -> Req {
    Req::Resolve(pb::ResolveConversationRequest {
        conversation_id: conversation.into(),
    })
}

pub fn reopen(conversation: &str) -> Req {
    Req::Reopen(pb::ReopenConversationRequest {
        conversation_id: conversation.into(),
    })
}

pub fn deactivate(user: &str) -> Req {
    Req::DeactivateUser(pb::DeactivateUserRequest {
        user_id: user.into(),
    })
}

pub fn get_group(id: &str) -> Req {
    Req::GetGroup(pb::GetAccessGroupRequest {
        access_group_id: id.into(),
    })
}

pub fn delete_group(id: &str) -> Req {
    Req::DeleteGroup(pb::DeleteAccessGroupRequest {
        access_group_id: id.into(),
    })
}

pub fn reply(conversation: &str, user: &str) -> Req {
    Req::CheckReply(pb::CheckReplyPermissionRequest {
        conversation_id: conversation.into(),
        user_id: user.into(),
    })
}

pub fn access(conversation: &str, user: &str) -> Req {
    Req::CheckAccess(pb::CheckAccessRequest {
        conversation_id: conversation.into(),
        user_id: user.into(),
    })
}

pub fn list(
    assignee: &str,
    unassigned: bool,
    status: i32,
    page_size: i32,
    page_token: &str,
) -> Req {
    Req::List(pb::ListConversationsRequest {
        assignee_id: assignee.into(),
        unassigned,
        status,
        page_size,
        page_token: page_token.into(),
        held_by_unreachable: false,
    })
}

pub fn history(conversation: &str, page_size: i32, page_token: &str) -> Req {
    Req::History(pb::ListAssignmentHistoryRequest {
        conversation_id: conversation.into(),
        page_size,
        page_token: page_token.into(),
    })
}

pub fn groups(organizer: &str, page_size: i32, page_token: &str) -> Req {
    Req::ListGroups(pb::ListAccessGroupsRequest {
        organizer_id: organizer.into(),
        page_size,
        page_token: page_token.into(),
    })
}

pub fn user(user_id: &str, role: i32, display_name: &str) -> Req {
    Req::UpsertUser(pb::UpsertUserRequest {
        user_id: user_id.into(),
        role,
        display_name: display_name.into(),
    })
}

pub fn conversation(id: &str, member: &str, tags: Vec<String>) -> Req {
    Req::UpsertConversation(pb::UpsertConversationRequest {
        conversation_id: id.into(),
        member_id: member.into(),
        member_tags: tags,
    })
}

pub fn perms(view: bool, reply: bool) -> Option<pb::AccessGroupPermissions> {
    Some(pb::AccessGroupPermissions { view, reply })
}

pub fn tags(tags: Vec<String>) -> Option<pb::AccessGroupScope> {
    Some(pb::AccessGroupScope {
        member_tags: tags,
        ..Default::default()
    })
}

pub fn listed(conversation_ids: Vec<String>) -> Option<pb::AccessGroupScope> {
    Some(pb::AccessGroupScope {
        conversation_ids,
        ..Default::default()
    })
}

pub fn all() -> Option<pb::AccessGroupScope> {
    Some(pb::AccessGroupScope {
        all_conversations: true,
        ..Default::default()
    })
}

pub fn create(
    name: &str,
    permissions: Option<pb::AccessGroupPermissions>,
    scope: Option<pb::AccessGroupScope>,
    organizers: Vec<String>,
) -> Req {
    Req::CreateGroup(pb::CreateAccessGroupRequest {
        name: name.into(),
        permissions,
        scope,
        organizer_ids: organizers,
    })
}

pub fn update(
    id: &str,
    name: Option<&str>,
    permissions: Option<pb::AccessGroupPermissions>,
    scope: Option<pb::AccessGroupScope>,
) -> Req {
    Req::UpdateGroup(pb::UpdateAccessGroupRequest {
        access_group_id: id.into(),
        name: name.map(str::to_owned),
        permissions,
        scope,
    })
}

pub fn add(id: &str, organizers: Vec<String>) -> Req {
    Req::AddOrganizers(pb::AddOrganizersRequest {
        access_group_id: id.into(),
        organizer_ids: organizers,
    })
}

pub fn remove(id: &str, organizers: Vec<String>) -> Req {
    Req::RemoveOrganizers(pb::RemoveOrganizersRequest {
        access_group_id: id.into(),
        organizer_ids: organizers,
    })
}

pub fn eligible(conversation_ids: Vec<String>) -> Req {
    Req::Eligible(pb::ListEligibleAssigneesRequest {
        conversation_ids,
        all_access_groups: false,
    })
}

pub fn auto(conversation: &str, trigger: &str, member: &str, member_tags: Vec<String>) -> Req {
    Req::AutoAssign(pb::AutoAssignConversationRequest {
        priority: Default::default(),
        conversation_id: conversation.into(),
        trigger_id: trigger.into(),
        member_id: member.into(),
        member_tags,
    })
}

/// A bulk message: the options, or a batch of conversation ids.
pub enum Msg {
    Options(pb::BulkAssignOptions),
    Batch(Vec<String>),
}

pub fn to(assignees: &[&str]) -> Msg {
    to_all(strings(assignees))
}

pub fn to_all(assignee_ids: Vec<String>) -> Msg {
    Msg::Options(pb::BulkAssignOptions {
        assignee_ids,
        ..Default::default()
    })
}

pub fn options(assignees: &[&str], groups: &[&str], grant: bool, name: &str) -> Msg {
    Msg::Options(pb::BulkAssignOptions {
        assignee_ids: strings(assignees),
        access_group_ids: strings(groups),
        grant_access: grant,
        new_access_group_name: name.into(),
    })
}

pub fn bulk_assign(messages: Vec<Msg>) -> Req {
    use pb::bulk_assign_request::Payload;
    Req::BulkAssign(
        messages
            .into_iter()
            .map(|m| pb::BulkAssignRequest {
                payload: Some(match m {
                    Msg::Options(o) => Payload::Options(o),
                    Msg::Batch(ids) => Payload::Conversations(batch(ids)),
                }),
            })
            .collect(),
    )
}

pub fn bulk_reassign(messages: Vec<Msg>) -> Req {
    use pb::bulk_reassign_request::Payload;
    Req::BulkReassign(
        messages
            .into_iter()
            .map(|m| pb::BulkReassignRequest {
                payload: Some(match m {
                    Msg::Options(o) => Payload::Options(o),
                    Msg::Batch(ids) => Payload::Conversations(batch(ids)),
                }),
            })
            .collect(),
    )
}

/// BulkUnassign messages; `None` is a message without its batch.
pub fn bulk_unassign(batches: Vec<Option<Vec<String>>>) -> Req {
    Req::BulkUnassign(
        batches
            .into_iter()
            .map(|ids| pb::BulkUnassignRequest {
                conversations: ids.map(batch),
            })
            .collect(),
    )
}

pub fn batch(conversation_ids: Vec<String>) -> pb::ConversationBatch {
    pb::ConversationBatch { conversation_ids }
}

pub fn malformed_ids() -> Vec<String> {
    strings(&["", "c 1", "cé", "c\u{7}", " ", &long()])
}

pub const OVER: usize = 1_001;
pub const ROLE: i32 = pb::Role::Organizer as i32;
pub const ACTOR: &str = "x-actor-id";
pub const CAMPAIGN: &str = "x-campaign-id";
