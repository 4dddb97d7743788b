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
mod tests {
    use super::*;
    use crate::domain::fixtures::{admin, organizer, user};

    fn situation(current: Option<&str>, can_view: bool) -> Situation<'_> {
        Situation {
            conversation_id: "c1",
            current_assignee: current,
            actor_can_view: can_view,
        }
    }

    fn reason(result: AppResult<Plan>) -> &'static str {
        match result.unwrap_err().reason() {
            Some(reason) => reason.as_str(),
            None => panic!("expected a refusal"),
        }
    }

    fn assign_to(to: &str) -> Plan {
        Plan::Change {
            action: AssignmentAction::Assign,
            to: Some(to.into()),
        }
    }

    #[test]
    fn admin_assigns_unassigned_conversation_to_anyone_active() {
        let org = user("o1", Role::Organizer, true);
        let other_admin = user("a2", Role::Admin, true);
        // Admins need no access group.
        let s = situation(None, false);
        assert_eq!(
            plan_assign(&admin(), &s, "o1", Some(&org)).unwrap(),
            assign_to("o1")
        );
        assert_eq!(
            plan_assign(&admin(), &s, "a2", Some(&other_admin)).unwrap(),
            assign_to("a2")
        );
    }

    #[test]
    fn nobody_assigns_to_unknown_or_inactive_users() {
        let s = situation(None, true);
        assert_eq!(
            reason(plan_assign(&admin(), &s, "ghost", None)),
            "ASSIGNEE_NOT_FOUND"
        );
        let gone = user("o1", Role::Organizer, false);
        assert_eq!(
            reason(plan_assign(&admin(), &s, "o1", Some(&gone))),
            "ASSIGNEE_INACTIVE"
        );
        assert_eq!(
            reason(plan_reassign(
                &admin(),
                &situation(Some("o2"), true),
                "o1",
                Some(&gone)
            )),
            "ASSIGNEE_INACTIVE"
        );
    }

    #[test]
    fn assign_over_another_holder_is_a_precondition_failure_for_everyone() {
        let s = situation(Some("o2"), true);
        let o1 = user("o1", Role::Organizer, true);
        assert_eq!(
            reason(plan_assign(&admin(), &s, "o1", Some(&o1))),
            "ALREADY_ASSIGNED"
        );
        assert_eq!(
            reason(plan_assign(&organizer("o1"), &s, "o1", Some(&o1))),
            "ALREADY_ASSIGNED"
        );
    }

    #[test]
    fn assigning_the_current_holder_again_changes_nothing() {
        let o1 = user("o1", Role::Organizer, true);
        let s = situation(Some("o1"), true);
        assert_eq!(
            plan_assign(&admin(), &s, "o1", Some(&o1)).unwrap(),
            Plan::Unchanged
        );
        assert_eq!(
            plan_assign(&organizer("o1"), &s, "o1", Some(&o1)).unwrap(),
            Plan::Unchanged
        );
    }

    #[test]
    fn organizers_assign_only_to_themselves_and_only_what_they_can_view() {
        let o1 = user("o1", Role::Organizer, true);
        let o2 = user("o2", Role::Organizer, true);
        let me = organizer("o1");
        assert_eq!(
            plan_assign(&me, &situation(None, true), "o1", Some(&o1)).unwrap(),
            assign_to("o1")
        );
        assert_eq!(
            reason(plan_assign(&me, &situation(None, true), "o2", Some(&o2))),
            "ORGANIZER_ASSIGNS_SELF_ONLY"
        );
        assert_eq!(
            reason(plan_assign(&me, &situation(None, false), "o1", Some(&o1))),
            "NO_VIEW_ACCESS"
        );
    }

    #[test]
    fn unassign_rules() {
        let me = organizer("o1");
        let unassign = Plan::Change {
            action: AssignmentAction::Unassign,
            to: None,
        };
        assert_eq!(
            plan_unassign(&admin(), &situation(Some("o2"), false)).unwrap(),
            unassign
        );
        assert_eq!(
            plan_unassign(&me, &situation(Some("o1"), false)).unwrap(),
            unassign
        );
        assert_eq!(
            reason(plan_unassign(&me, &situation(Some("o2"), true))),
            "ORGANIZER_UNASSIGNS_OWN_ONLY"
        );
        assert_eq!(
            plan_unassign(&me, &situation(None, true)).unwrap(),
            Plan::Unchanged
        );
        assert_eq!(
            plan_unassign(&admin(), &situation(None, true)).unwrap(),
            Plan::Unchanged
        );
    }

    #[test]
    fn only_admins_reassign_and_only_assigned_conversations() {
        let o1 = user("o1", Role::Organizer, true);
        let held = situation(Some("o2"), true);
        assert_eq!(
            plan_reassign(&admin(), &held, "o1", Some(&o1)).unwrap(),
            Plan::Change {
                action: AssignmentAction::Reassign,
                to: Some("o1".into())
            }
        );
        assert_eq!(
            reason(plan_reassign(&organizer("o1"), &held, "o1", Some(&o1))),
            "ORGANIZERS_CANNOT_REASSIGN"
        );
        assert_eq!(
            reason(plan_reassign(
                &admin(),
                &situation(None, true),
                "o1",
                Some(&o1)
            )),
            "NOT_ASSIGNED"
        );
        assert_eq!(
            plan_reassign(&admin(), &situation(Some("o1"), true), "o1", Some(&o1)).unwrap(),
            Plan::Unchanged
        );
    }

    #[test]
    fn version_check_aborts_on_a_stale_read() {
        assert!(check_version("c1", None, 7).is_ok());
        assert!(check_version("c1", Some(7), 7).is_ok());
        assert_eq!(
            check_version("c1", Some(6), 7).unwrap_err().reason(),
            Some(Reason::VersionMismatch)
        );
    }

    #[test]
    fn status_changes_never_need_the_assignment_to_change() {
        use ConversationStatus::{Open, Resolved};
        let me = organizer("o1");
        assert!(
            plan_status_change(&admin(), &situation(Some("o2"), false), Open, Resolved).unwrap()
        );
        assert!(
            !plan_status_change(&admin(), &situation(None, false), Resolved, Resolved).unwrap()
        );
        assert!(plan_status_change(&me, &situation(Some("o1"), false), Open, Resolved).unwrap());
        assert!(plan_status_change(&me, &situation(None, true), Open, Resolved).unwrap());
        assert!(plan_status_change(&me, &situation(Some("o2"), true), Open, Resolved).is_err());
        assert!(plan_status_change(&me, &situation(None, false), Open, Resolved).is_err());
    }
}
