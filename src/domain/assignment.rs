//! The assignment rules of the help article, as pure decisions over one conversation's current state.

use crate::domain::model::{Actor, AssignmentAction, ConversationStatus, Role, UserRef};
use crate::error::{AppError, AppResult, Reason};

/// What the store should do to the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Already in the requested state: succeed without writing.
    Unchanged,
    /// Set the assignee (`None` = unassign) and record one history event.
    Change {
        action: AssignmentAction,
        to: Option<String>,
    },
}

/// What the rules need to know about the conversation and the people involved.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub conversation_id: &'a str,
    pub current_assignee: Option<&'a str>,
    /// Whether the actor may view this conversation ([`crate::domain::access::may_view`]).
    pub actor_can_view: bool,
}

/// The assignee change a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssigneeRequest<'a> {
    Assign { to: &'a str },
    Unassign,
    Reassign { to: &'a str },
}

impl<'a> AssigneeRequest<'a> {
    /// The user the change would assign to.
    pub fn target_id(self) -> Option<&'a str> {
        match self {
            AssigneeRequest::Assign { to } | AssigneeRequest::Reassign { to } => Some(to),
            AssigneeRequest::Unassign => None,
        }
    }
}

/// Applies the rule of the requested change.
pub fn plan_assignee_change(
    actor: &Actor,
    situation: &Situation<'_>,
    request: AssigneeRequest<'_>,
    target: Option<&UserRef>,
) -> AppResult<Plan> {
    match request {
        AssigneeRequest::Assign { to } => plan_assign(actor, situation, to, target),
        AssigneeRequest::Unassign => plan_unassign(actor, situation),
        AssigneeRequest::Reassign { to } => plan_reassign(actor, situation, to, target),
    }
}

/// Compare-and-set: a caller that read `expected` may only write if nothing changed since.
pub fn check_version(conversation_id: &str, expected: Option<i64>, actual: i64) -> AppResult<()> {
    match expected {
        Some(expected) if expected != actual => Err(AppError::new(
            Reason::VersionMismatch,
            format!(
                "conversation {conversation_id:?} is at version {actual}, not {expected}: \
                 it changed since you read it; read it again and retry"
            ),
        )),
        _ => Ok(()),
    }
}

/// An assignee must exist in the campaign and be active.
fn require_assignable<'u>(target_id: &str, target: Option<&'u UserRef>) -> AppResult<&'u UserRef> {
    let target = target.ok_or_else(|| AppError::assignee_not_found(target_id))?;
    if !target.active {
        return Err(AppError::assignee_inactive(target_id));
    }
    Ok(target)
}

/// AssignConversation: admins to anyone active; organizers only to themselves, only what they can view,
/// and only while unassigned.
pub fn plan_assign(
    actor: &Actor,
    situation: &Situation<'_>,
    target_id: &str,
    target: Option<&UserRef>,
) -> AppResult<Plan> {
    let conversation_id = situation.conversation_id;
    if actor.role == Role::Organizer && target_id != actor.user_id {
        return Err(AppError::new(
            Reason::OrganizerAssignsSelfOnly,
            format!("organizers can only assign conversations to themselves, not to {target_id:?}"),
        ));
    }
    require_assignable(target_id, target)?;
    if situation.current_assignee == Some(target_id) {
        return Ok(Plan::Unchanged);
    }
    if actor.role == Role::Organizer && !situation.actor_can_view {
        return Err(AppError::no_view_access(conversation_id));
    }
    if let Some(holder) = situation.current_assignee {
        let hint = match actor.role {
            Role::Admin => "use ReassignConversation to move it",
            Role::Organizer => "organizers cannot reassign conversations; ask an admin",
        };
        return Err(AppError::new(
            Reason::AlreadyAssigned,
            format!("conversation {conversation_id:?} is already assigned to {holder:?}; {hint}"),
        ));
    }
    Ok(Plan::Change {
        action: AssignmentAction::Assign,
        to: Some(target_id.to_owned()),
    })
}

/// UnassignConversation: admins any; organizers only their own. Unassigning nobody changes nothing.
pub fn plan_unassign(actor: &Actor, situation: &Situation<'_>) -> AppResult<Plan> {
    match situation.current_assignee {
        None => Ok(Plan::Unchanged),
        Some(holder) if actor.role == Role::Organizer && holder != actor.user_id => {
            Err(AppError::new(
                Reason::OrganizerUnassignsOwnOnly,
                format!(
                    "conversation {:?} is assigned to {holder:?}; organizers can only unassign \
                     conversations assigned to them",
                    situation.conversation_id
                ),
            ))
        }
        Some(_) => Ok(Plan::Change {
            action: AssignmentAction::Unassign,
            to: None,
        }),
    }
}

/// ReassignConversation: admins only, from one holder to another active user.
pub fn plan_reassign(
    actor: &Actor,
    situation: &Situation<'_>,
    target_id: &str,
    target: Option<&UserRef>,
) -> AppResult<Plan> {
    if actor.role == Role::Organizer {
        return Err(AppError::new(
            Reason::OrganizersCannotReassign,
            "organizers cannot reassign conversations; ask an admin",
        ));
    }
    require_assignable(target_id, target)?;
    match situation.current_assignee {
        None => Err(AppError::new(
            Reason::NotAssigned,
            format!(
                "conversation {:?} is not assigned to anyone; use AssignConversation",
                situation.conversation_id
            ),
        )),
        Some(holder) if holder == target_id => Ok(Plan::Unchanged),
        Some(_) => Ok(Plan::Change {
            action: AssignmentAction::Reassign,
            to: Some(target_id.to_owned()),
        }),
    }
}

/// Resolve/reopen: admins any; organizers what they can view (or hold), unless someone else holds it.
/// Returns whether the status actually changes; the assignee never does.
pub fn plan_status_change(
    actor: &Actor,
    situation: &Situation<'_>,
    current: ConversationStatus,
    wanted: ConversationStatus,
) -> AppResult<bool> {
    if actor.role == Role::Organizer {
        let conversation_id = situation.conversation_id;
        match situation.current_assignee {
            Some(holder) if holder != actor.user_id => {
                return Err(AppError::new(
                    Reason::AssignedToOther,
                    format!(
                        "conversation {conversation_id:?} is assigned to {holder:?}; only they or an \
                         admin can change its status"
                    ),
                ));
            }
            Some(_) => {}
            None if !situation.actor_can_view => {
                return Err(AppError::no_view_access(conversation_id));
            }
            None => {}
        }
    }
    Ok(current != wanted)
}

#[cfg(test)]
mod tests;
