//! Domain values to protobuf messages, and protobuf enums and messages to domain values.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::domain::access::ReplyDecision;
use crate::domain::access_group::{AccessGroup, GroupGrant, GroupScope, Permissions};
use crate::domain::auto_assign::{
    AutoOutcome, Candidate, DEFAULT_PRIORITY_STEP_SECONDS, InboxSettings, Ineligible,
    OnUnavailable, Priority, RotationStart, RoutingMode, SettingsChange,
};
use crate::domain::holders::OnUnreachableHolder;
use crate::domain::model::{
    AssignmentAction, AssignmentSource, Availability, Conversation, ConversationStatus, Role, User,
};
use crate::domain::replies::{OnReplyOverdue, ReplySettings};
use crate::domain::shifts::DEFAULT_TIME_ZONE;
use crate::pb;
use crate::service::conversations::StatusFilter;
use crate::service::feed::Delivered;

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

/// `None` for UNSPECIFIED or an unknown value.
pub fn role_from_pb(value: i32) -> Option<Role> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Admin) => Some(Role::Admin),
        Ok(pb::Role::Organizer) => Some(Role::Organizer),
        _ => None,
    }
}

/// UNSPECIFIED means any status.
pub fn status_filter_from_pb(value: i32) -> StatusFilter {
    match pb::ConversationStatus::try_from(value) {
        Ok(pb::ConversationStatus::Unspecified) => StatusFilter::Any,
        Ok(pb::ConversationStatus::Open) => StatusFilter::Only(ConversationStatus::Open),
        Ok(pb::ConversationStatus::Resolved) => StatusFilter::Only(ConversationStatus::Resolved),
        Err(_) => StatusFilter::Unknown(value),
    }
}

pub fn user(user: User) -> pb::User {
    pb::User {
        role: role_to_pb(user.role).into(),
        user_id: user.user_id,
        display_name: user.display_name,
        active: user.active,
        updated_at: Some(timestamp(user.updated_at)),
        availability: availability_to_pb(user.availability).into(),
        capacity: user.capacity,
    }
}

pub fn availability_to_pb(availability: Availability) -> pb::Availability {
    match availability {
        Availability::Available => pb::Availability::Available,
        Availability::Away => pb::Availability::Away,
        Availability::Offline => pb::Availability::Offline,
    }
}

/// `None` for UNSPECIFIED or an unknown value.
pub fn availability_from_pb(value: i32) -> Option<Availability> {
    match pb::Availability::try_from(value) {
        Ok(pb::Availability::Available) => Some(Availability::Available),
        Ok(pb::Availability::Away) => Some(Availability::Away),
        Ok(pb::Availability::Offline) => Some(Availability::Offline),
        _ => None,
    }
}

pub fn conversation(conversation: Conversation) -> pb::Conversation {
    let status = match conversation.status {
        ConversationStatus::Open => pb::ConversationStatus::Open,
        ConversationStatus::Resolved => pb::ConversationStatus::Resolved,
    };
    pb::Conversation {
        conversation_id: conversation.conversation_id,
        member_id: conversation.member_id,
        member_tags: conversation.member_tags,
        status: status.into(),
        assignee_id: conversation.assignee_id,
        assigned_at: conversation.assigned_at.map(timestamp),
        assigned_by: conversation.assigned_by,
        version: conversation.version,
        updated_at: Some(timestamp(conversation.updated_at)),
        awaiting_reply_since: conversation.awaiting_reply_since.map(timestamp),
        reply_due_at: conversation.reply_due_at.map(timestamp),
    }
}

/// An event with its public id and feed cursor (`service::feed::Place`).
pub fn event(delivered: Delivered) -> pb::AssignmentEvent {
    let Delivered { event, place } = delivered;
    let action = match event.action {
        AssignmentAction::Assign => pb::AssignmentAction::Assign,
        AssignmentAction::Unassign => pb::AssignmentAction::Unassign,
        AssignmentAction::Reassign => pb::AssignmentAction::Reassign,
        AssignmentAction::AvailabilityChanged => pb::AssignmentAction::AvailabilityChanged,
        AssignmentAction::Resolve => pb::AssignmentAction::Resolve,
        AssignmentAction::Reopen => pb::AssignmentAction::Reopen,
        AssignmentAction::Queued => pb::AssignmentAction::Queued,
        AssignmentAction::LeftQueue => pb::AssignmentAction::LeftQueue,
        AssignmentAction::ReplyOverdue => pb::AssignmentAction::ReplyOverdue,
        AssignmentAction::ShiftStarted => pb::AssignmentAction::ShiftStarted,
        AssignmentAction::ShiftEnded => pb::AssignmentAction::ShiftEnded,
    };
    let source = match event.source {
        AssignmentSource::Manual => pb::AssignmentSource::Manual,
        AssignmentSource::Bulk => pb::AssignmentSource::Bulk,
        AssignmentSource::Auto => pb::AssignmentSource::Auto,
    };
    pb::AssignmentEvent {
        event_id: place.event_id,
        conversation_id: event.conversation_id.unwrap_or_default(),
        action: action.into(),
        from_user_id: event.from_user_id,
        to_user_id: event.to_user_id,
        actor_id: event.actor_id,
        source: source.into(),
        occurred_at: Some(timestamp(event.occurred_at)),
        request_id: event.request_id.unwrap_or_default(),
        user_id: event.user_id.unwrap_or_default(),
        cause: event.cause.unwrap_or_default(),
        priority: event
            .priority
            .map_or(pb::Priority::Unspecified, priority_to_pb)
            .into(),
        cursor: place.cursor,
        availability: event
            .availability
            .map_or(pb::Availability::Unspecified, availability_to_pb)
            .into(),
    }
}

pub fn access_group(group: AccessGroup) -> pb::AccessGroup {
    pb::AccessGroup {
        access_group_id: group.access_group_id.to_string(),
        name: group.name,
        permissions: Some(pb::AccessGroupPermissions {
            view: group.can_view,
            reply: group.can_reply,
        }),
        scope: Some(pb::AccessGroupScope {
            all_conversations: group.scope_all,
            member_tags: group.scope_tags,
            conversation_ids: group.conversation_ids,
        }),
        organizer_ids: group.organizer_ids,
        created_at: Some(timestamp(group.created_at)),
        updated_at: Some(timestamp(group.updated_at)),
    }
}

pub fn grant(grant: GroupGrant) -> pb::AccessGrant {
    pb::AccessGrant {
        access_group_id: grant.access_group_id.to_string(),
        name: grant.name,
        permissions: Some(pb::AccessGroupPermissions {
            view: grant.can_view,
            reply: grant.can_reply,
        }),
    }
}

pub fn permissions(value: pb::AccessGroupPermissions) -> Permissions {
    Permissions {
        view: value.view,
        reply: value.reply,
    }
}

pub fn scope(value: pb::AccessGroupScope) -> GroupScope {
    GroupScope {
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

pub fn auto_outcome(outcome: &AutoOutcome) -> pb::AutoAssignOutcome {
    match outcome {
        AutoOutcome::Assigned(_) => pb::AutoAssignOutcome::Assigned,
        AutoOutcome::AlreadyAssigned(_) => pb::AutoAssignOutcome::AlreadyAssigned,
        AutoOutcome::NoEligibleOrganizer => pb::AutoAssignOutcome::NoEligibleOrganizer,
        AutoOutcome::Disabled => pb::AutoAssignOutcome::Disabled,
        AutoOutcome::Queued => pb::AutoAssignOutcome::Queued,
    }
}

/// Never configured: everything off.
pub fn inbox_settings(settings: Option<InboxSettings>) -> pb::InboxSettings {
    match settings {
        Some(settings) => pb::InboxSettings {
            auto_assign_enabled: settings.auto_assign_enabled,
            updated_at: Some(timestamp(settings.updated_at)),
            updated_by: settings.updated_by,
            default_capacity: settings.default_capacity,
            routing_mode: routing_mode_to_pb(settings.routing_mode).into(),
            rotation_start: rotation_start_to_pb(settings.rotation_start).into(),
            on_unavailable: on_unavailable_to_pb(settings.on_unavailable).into(),
            reply_within_seconds: settings.replies.reply_within_seconds.unwrap_or(0),
            on_reply_overdue: on_reply_overdue_to_pb(settings.replies.on_reply_overdue).into(),
            max_overdue_reassignments: settings.replies.max_overdue_reassignments,
            priority_step_seconds: settings.priority_step_seconds,
            on_unreachable_holder: on_unreachable_holder_to_pb(settings.on_unreachable_holder)
                .into(),
            time_zone: settings.time_zone,
        },
        // The domain's defaults, which a new settings row gets from its columns' defaults (checked by
        // tests/integration/store_rules.rs); no `updated_at`: never set.
        None => pb::InboxSettings {
            routing_mode: routing_mode_to_pb(RoutingMode::default()).into(),
            rotation_start: rotation_start_to_pb(RotationStart::default()).into(),
            on_unavailable: on_unavailable_to_pb(OnUnavailable::default()).into(),
            on_reply_overdue: on_reply_overdue_to_pb(OnReplyOverdue::default()).into(),
            max_overdue_reassignments: ReplySettings::default().max_overdue_reassignments,
            priority_step_seconds: DEFAULT_PRIORITY_STEP_SECONDS,
            on_unreachable_holder: on_unreachable_holder_to_pb(OnUnreachableHolder::default())
                .into(),
            time_zone: DEFAULT_TIME_ZONE.to_owned(),
            ..pb::InboxSettings::default()
        },
    }
}

/// A trigger's priority; unknown values are refused by the returned field name.
pub fn priority_from_pb(priority: i32) -> Result<Priority, &'static str> {
    match pb::Priority::try_from(priority) {
        Ok(pb::Priority::Unspecified | pb::Priority::Normal) => Ok(Priority::Normal),
        Ok(pb::Priority::Low) => Ok(Priority::Low),
        Ok(pb::Priority::High) => Ok(Priority::High),
        Ok(pb::Priority::Urgent) => Ok(Priority::Urgent),
        Err(_) => Err("priority"),
    }
}

pub fn priority_to_pb(priority: Priority) -> pb::Priority {
    match priority {
        Priority::Low => pb::Priority::Low,
        Priority::Normal => pb::Priority::Normal,
        Priority::High => pb::Priority::High,
        Priority::Urgent => pb::Priority::Urgent,
    }
}

fn on_unreachable_holder_to_pb(policy: OnUnreachableHolder) -> pb::OnUnreachableHolder {
    match policy {
        OnUnreachableHolder::ReturnToQueue => pb::OnUnreachableHolder::ReturnToQueue,
        OnUnreachableHolder::Keep => pb::OnUnreachableHolder::Keep,
    }
}

fn on_reply_overdue_to_pb(on_reply_overdue: OnReplyOverdue) -> pb::OnReplyOverdue {
    match on_reply_overdue {
        OnReplyOverdue::Reassign => pb::OnReplyOverdue::Reassign,
        OnReplyOverdue::Notify => pb::OnReplyOverdue::Notify,
    }
}

fn on_unavailable_to_pb(on_unavailable: OnUnavailable) -> pb::OnUnavailable {
    match on_unavailable {
        OnUnavailable::Keep => pb::OnUnavailable::Keep,
        OnUnavailable::ReturnToQueue => pb::OnUnavailable::ReturnToQueue,
    }
}

fn routing_mode_to_pb(mode: RoutingMode) -> pb::RoutingMode {
    match mode {
        RoutingMode::RoundRobin => pb::RoutingMode::RoundRobin,
        RoutingMode::Balanced => pb::RoutingMode::Balanced,
    }
}

fn rotation_start_to_pb(start: RotationStart) -> pb::RotationStart {
    match start {
        RotationStart::LastAssigned => pb::RotationStart::LastAssigned,
        RotationStart::LastAutoAssigned => pb::RotationStart::LastAutoAssigned,
    }
}

/// The settings an UpdateInboxSettings request changes (UNSPECIFIED enums and unknown values keep theirs;
/// an unknown value is reported by the returned field name).
pub fn settings_change(
    request: &pb::UpdateInboxSettingsRequest,
) -> Result<SettingsChange, &'static str> {
    let routing_mode = match pb::RoutingMode::try_from(request.routing_mode) {
        Ok(pb::RoutingMode::Unspecified) => None,
        Ok(pb::RoutingMode::RoundRobin) => Some(RoutingMode::RoundRobin),
        Ok(pb::RoutingMode::Balanced) => Some(RoutingMode::Balanced),
        Err(_) => return Err("routing_mode"),
    };
    let rotation_start = match pb::RotationStart::try_from(request.rotation_start) {
        Ok(pb::RotationStart::Unspecified) => None,
        Ok(pb::RotationStart::LastAssigned) => Some(RotationStart::LastAssigned),
        Ok(pb::RotationStart::LastAutoAssigned) => Some(RotationStart::LastAutoAssigned),
        Err(_) => return Err("rotation_start"),
    };
    let on_unavailable = match pb::OnUnavailable::try_from(request.on_unavailable) {
        Ok(pb::OnUnavailable::Unspecified) => None,
        Ok(pb::OnUnavailable::Keep) => Some(OnUnavailable::Keep),
        Ok(pb::OnUnavailable::ReturnToQueue) => Some(OnUnavailable::ReturnToQueue),
        Err(_) => return Err("on_unavailable"),
    };
    let on_reply_overdue = match pb::OnReplyOverdue::try_from(request.on_reply_overdue) {
        Ok(pb::OnReplyOverdue::Unspecified) => None,
        Ok(pb::OnReplyOverdue::Reassign) => Some(OnReplyOverdue::Reassign),
        Ok(pb::OnReplyOverdue::Notify) => Some(OnReplyOverdue::Notify),
        Err(_) => return Err("on_reply_overdue"),
    };
    let on_unreachable_holder =
        match pb::OnUnreachableHolder::try_from(request.on_unreachable_holder) {
            Ok(pb::OnUnreachableHolder::Unspecified) => None,
            Ok(pb::OnUnreachableHolder::ReturnToQueue) => Some(OnUnreachableHolder::ReturnToQueue),
            Ok(pb::OnUnreachableHolder::Keep) => Some(OnUnreachableHolder::Keep),
            Err(_) => return Err("on_unreachable_holder"),
        };
    Ok(SettingsChange {
        auto_assign_enabled: request.auto_assign_enabled,
        default_capacity: request.default_capacity,
        routing_mode,
        rotation_start,
        on_unavailable,
        // 0 switches the timer off.
        reply_within_seconds: request
            .reply_within_seconds
            .map(|seconds| (seconds != 0).then_some(seconds)),
        on_reply_overdue,
        max_overdue_reassignments: request.max_overdue_reassignments,
        priority_step_seconds: request.priority_step_seconds,
        on_unreachable_holder,
        time_zone: request.time_zone.clone(),
    })
}

pub fn candidate(candidate: Candidate) -> pb::PreviewCandidate {
    let reasons = candidate
        .reasons()
        .into_iter()
        .map(|reason| {
            i32::from(match reason {
                Ineligible::Admin => pb::IneligibleReason::Admin,
                Ineligible::Inactive => pb::IneligibleReason::Inactive,
                Ineligible::Away => pb::IneligibleReason::Away,
                Ineligible::Offline => pb::IneligibleReason::Offline,
                Ineligible::NoReplyAccess => pb::IneligibleReason::NoReplyAccess,
                Ineligible::AtCapacity => pb::IneligibleReason::AtCapacity,
                Ineligible::Lapsed => pb::IneligibleReason::Lapsed,
                Ineligible::OffShift => pb::IneligibleReason::OffShift,
            })
        })
        .collect();
    pb::PreviewCandidate {
        explanation: candidate.explanation(),
        open_conversations: i32::try_from(candidate.load.open).unwrap_or(i32::MAX),
        capacity: i32::try_from(candidate.load.capacity).unwrap_or(i32::MAX),
        user_id: candidate.user_id,
        reasons,
    }
}
