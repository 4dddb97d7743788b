//! Store rows and domain values to protobuf messages, and protobuf enums to domain values.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::domain::access_group::{Permissions, Scope};
use crate::domain::model::{AssignmentAction, AssignmentSource, ConversationStatus, Role};
use crate::domain::reply::ReplyDecision;
use crate::error::{AppError, AppResult};
use crate::pb;
use crate::store::{AccessGroupRow, ConversationRow, EventRow, GrantRow, UserRow};

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Admin => pb::Role::Admin,
        Role::Organizer => pb::Role::Organizer,
    }
}

pub fn role_from_pb(field: &str, value: i32) -> AppResult<Role> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Organizer) => Ok(Role::Organizer),
        _ => Err(AppError::invalid(
            field,
            format!("{field} must be ROLE_ADMIN or ROLE_ORGANIZER"),
        )),
    }
}

/// `None` for UNSPECIFIED (any status).
pub fn status_filter_from_pb(value: i32) -> AppResult<Option<ConversationStatus>> {
    match pb::ConversationStatus::try_from(value) {
        Ok(pb::ConversationStatus::Unspecified) => Ok(None),
        Ok(pb::ConversationStatus::Open) => Ok(Some(ConversationStatus::Open)),
        Ok(pb::ConversationStatus::Resolved) => Ok(Some(ConversationStatus::Resolved)),
        Err(_) => Err(AppError::invalid(
            "status",
            format!("status {value} is not a ConversationStatus"),
        )),
    }
}

pub fn user(row: UserRow) -> pb::User {
    pb::User {
        role: role_to_pb(Role::from_db(&row.role)).into(),
        user_id: row.user_id,
        display_name: row.display_name,
        active: row.active,
        updated_at: Some(timestamp(row.updated_at)),
    }
}

pub fn conversation(row: ConversationRow) -> pb::Conversation {
    let status = match ConversationStatus::from_db(&row.status) {
        ConversationStatus::Open => pb::ConversationStatus::Open,
        ConversationStatus::Resolved => pb::ConversationStatus::Resolved,
    };
    pb::Conversation {
        conversation_id: row.conversation_id,
        member_id: row.member_id,
        member_tags: row.member_tags,
        status: status.into(),
        assignee_id: row.assignee_id,
        assigned_at: row.assigned_at.map(timestamp),
        assigned_by: row.assigned_by,
        version: row.version,
        updated_at: Some(timestamp(row.updated_at)),
    }
}

pub fn event(row: EventRow) -> pb::AssignmentEvent {
    let action = match AssignmentAction::from_db(&row.action) {
        AssignmentAction::Assign => pb::AssignmentAction::Assign,
        AssignmentAction::Unassign => pb::AssignmentAction::Unassign,
        AssignmentAction::Reassign => pb::AssignmentAction::Reassign,
    };
    let source = match AssignmentSource::from_db(&row.source) {
        AssignmentSource::Manual => pb::AssignmentSource::Manual,
        AssignmentSource::Bulk => pb::AssignmentSource::Bulk,
        AssignmentSource::Auto => pb::AssignmentSource::Auto,
    };
    pb::AssignmentEvent {
        event_id: row.event_id,
        conversation_id: row.conversation_id,
        action: action.into(),
        from_user_id: row.from_user_id,
        to_user_id: row.to_user_id,
        actor_id: row.actor_id,
        source: source.into(),
        occurred_at: Some(timestamp(row.occurred_at)),
        request_id: row.request_id.unwrap_or_default(),
    }
}

pub fn access_group(row: AccessGroupRow) -> pb::AccessGroup {
    pb::AccessGroup {
        access_group_id: row.access_group_id.to_string(),
        name: row.name,
        permissions: Some(pb::AccessGroupPermissions {
            view: row.can_view,
            reply: row.can_reply,
        }),
        scope: Some(pb::AccessGroupScope {
            all_conversations: row.scope_all,
            member_tags: row.scope_tags,
            conversation_ids: row.conversation_ids,
        }),
        organizer_ids: row.organizer_ids,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

pub fn grant(row: GrantRow) -> pb::AccessGrant {
    pb::AccessGrant {
        access_group_id: row.access_group_id.to_string(),
        name: row.name,
        permissions: Some(pb::AccessGroupPermissions {
            view: row.can_view,
            reply: row.can_reply,
        }),
    }
}

pub fn permissions(value: pb::AccessGroupPermissions) -> Permissions {
    Permissions {
        view: value.view,
        reply: value.reply,
    }
}

pub fn scope(value: pb::AccessGroupScope) -> Scope {
    Scope {
        all_conversations: value.all_conversations,
        member_tags: value.member_tags,
        conversation_ids: value.conversation_ids,
    }
}

pub fn reply_reason(decision: ReplyDecision) -> pb::ReplyPermissionReason {
    match decision {
        ReplyDecision::Admin => pb::ReplyPermissionReason::Admin,
        ReplyDecision::AssignedToUser => pb::ReplyPermissionReason::AssignedToUser,
        ReplyDecision::NotAssigned => pb::ReplyPermissionReason::NotAssigned,
        ReplyDecision::AssignedToOther => pb::ReplyPermissionReason::AssignedToOther,
        ReplyDecision::NoReplyAccess => pb::ReplyPermissionReason::NoReplyAccess,
        ReplyDecision::UserInactive => pb::ReplyPermissionReason::UserInactive,
    }
}
