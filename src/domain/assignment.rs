//! The assignment rules of the help article, as pure decisions over one conversation's current state.
//!
//! Every decision starts with visibility: an actor who may not view the conversation is answered exactly
//! as for a conversation that does not exist, before its version, holder or status is looked at.

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

/// What the rules need to know about the conversation, read under its row lock.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub conversation_id: &'a str,
    pub current_assignee: Option<&'a str>,
    pub version: i64,
    /// Whether the actor may view this conversation ([`crate::domain::access::may_view`]).
    pub actor_can_view: bool,
}

/// The assignee change a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssigneeRequest<'a> {
    Assign {
        to: &'a str,
    },
    Unassign,
    /// Unassign, and put the conversation (if open) at the front of the waiting queue: the holder hands it
    /// back for the next organizer. The rules of Unassign.
    Release,
    Reassign {
        to: &'a str,
    },
}

impl<'a> AssigneeRequest<'a> {
    /// The user the change would assign to.
    pub fn target_id(self) -> Option<&'a str> {
        match self {
            AssigneeRequest::Assign { to } | AssigneeRequest::Reassign { to } => Some(to),
            AssigneeRequest::Unassign | AssigneeRequest::Release => None,
        }
    }
}

/// Applies, in order: visibility, the compare-and-set on `expected_version`, and the rule of the change.
pub fn plan_assignee_change(
    actor: &Actor,
    situation: &Situation<'_>,
    request: AssigneeRequest<'_>,
    target: Option<&UserRef>,
    expected_version: Option<i64>,
) -> AppResult<Plan> {
    require_visible(situation)?;
    // What the actor may never do is refused before the state (version, holder) is looked at.
    match request {
        AssigneeRequest::Reassign { .. } if actor.role == Role::Organizer => {
            return Err(organizers_cannot_reassign());
        }
        AssigneeRequest::Assign { to } if actor.role == Role::Organizer && to != actor.user_id => {
            return Err(organizer_assigns_self_only(to));
        }
        _ => {}
    }
    check_version(situation, expected_version)?;
    match request {
        AssigneeRequest::Assign { to } => plan_assign(actor, situation, to, target),
        AssigneeRequest::Unassign | AssigneeRequest::Release => plan_unassign(actor, situation),
        AssigneeRequest::Reassign { to } => plan_reassign(actor, situation, to, target),
    }
}

/// Resolve/reopen: admins any; organizers what they may view, unless someone else holds it. Returns
/// whether the status actually changes; the assignee never does.
pub fn plan_status_change(
    actor: &Actor,
    situation: &Situation<'_>,
    current: ConversationStatus,
    wanted: ConversationStatus,
) -> AppResult<bool> {
    require_visible(situation)?;
    if actor.role == Role::Organizer
        && let Some(holder) = situation.current_assignee.filter(|h| *h != actor.user_id)
    {
        return Err(AppError::new(
            Reason::AssignedToOther,
            format!(
                "conversation {:?} is assigned to {holder:?}; only they or an admin can change its status",
                situation.conversation_id
            ),
        )
        .with("assignee_id", holder));
    }
    Ok(current != wanted)
}

fn organizers_cannot_reassign() -> AppError {
    AppError::new(
        Reason::OrganizersCannotReassign,
        "organizers cannot reassign conversations; ask an admin",
    )
}

fn organizer_assigns_self_only(target_id: &str) -> AppError {
    AppError::new(
        Reason::OrganizerAssignsSelfOnly,
        format!("organizers can only assign conversations to themselves, not to {target_id:?}"),
    )
}

/// An actor who may not view the conversation learns nothing of it: not found.
fn require_visible(situation: &Situation<'_>) -> AppResult<()> {
    if situation.actor_can_view {
        Ok(())
    } else {
        Err(AppError::conversation_not_found(situation.conversation_id))
    }
}

/// Compare-and-set: a caller that read `expected` may only write if nothing changed since.
fn check_version(situation: &Situation<'_>, expected: Option<i64>) -> AppResult<()> {
    let actual = situation.version;
    match expected {
        Some(expected) if expected != actual => Err(AppError::new(
            Reason::VersionMismatch,
            format!(
                "conversation {:?} is at version {actual}, not {expected}: it changed since you read \
                 it; read it again and retry",
                situation.conversation_id
            ),
        )
        .with("current_version", actual.to_string())
        .with("expected_version", expected.to_string())),
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

/// AssignConversation: admins to anyone active; organizers only to themselves, and only while unassigned.
fn plan_assign(
    actor: &Actor,
    situation: &Situation<'_>,
    target_id: &str,
    target: Option<&UserRef>,
) -> AppResult<Plan> {
    if actor.role == Role::Organizer && target_id != actor.user_id {
        return Err(organizer_assigns_self_only(target_id));
    }
    require_assignable(target_id, target)?;
    match situation.current_assignee {
        Some(holder) if holder == target_id => Ok(Plan::Unchanged),
        Some(holder) => {
            let hint = match actor.role {
                Role::Admin => "use ReassignConversation to move it",
                Role::Organizer => "organizers cannot reassign conversations; ask an admin",
            };
            Err(AppError::new(
                Reason::AlreadyAssigned,
                format!(
                    "conversation {:?} is already assigned to {holder:?}; {hint}",
                    situation.conversation_id
                ),
            )
            .with("assignee_id", holder))
        }
        None => Ok(Plan::Change {
            action: AssignmentAction::Assign,
            to: Some(target_id.to_owned()),
        }),
    }
}

/// UnassignConversation: admins any; organizers only their own. Unassigning nobody changes nothing.
fn plan_unassign(actor: &Actor, situation: &Situation<'_>) -> AppResult<Plan> {
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
            )
            .with("assignee_id", holder))
        }
        Some(_) => Ok(Plan::Change {
            action: AssignmentAction::Unassign,
            to: None,
        }),
    }
}

/// ReassignConversation: admins only, from one holder to another active user.
fn plan_reassign(
    actor: &Actor,
    situation: &Situation<'_>,
    target_id: &str,
    target: Option<&UserRef>,
) -> AppResult<Plan> {
    if actor.role == Role::Organizer {
        return Err(organizers_cannot_reassign());
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

#[cfg(test)]
mod tests;
