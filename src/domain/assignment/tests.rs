//! Unit tests of the assignment rules.

use super::*;
use crate::domain::fixtures::{admin, organizer, user};

fn situation(current: Option<&str>, can_view: bool) -> Situation<'_> {
    Situation {
        conversation_id: "c1",
        current_assignee: current,
        actor_can_view: can_view,
    }
}

fn reason(result: AppResult<Plan>) -> Reason {
    result.unwrap_err().reason().expect("a refusal")
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
        Reason::AssigneeNotFound
    );
    let gone = user("o1", Role::Organizer, false);
    assert_eq!(
        reason(plan_assign(&admin(), &s, "o1", Some(&gone))),
        Reason::AssigneeInactive
    );
    assert_eq!(
        reason(plan_reassign(
            &admin(),
            &situation(Some("o2"), true),
            "o1",
            Some(&gone)
        )),
        Reason::AssigneeInactive
    );
}

#[test]
fn assign_over_another_holder_is_a_precondition_failure_for_everyone() {
    let s = situation(Some("o2"), true);
    let o1 = user("o1", Role::Organizer, true);
    assert_eq!(
        reason(plan_assign(&admin(), &s, "o1", Some(&o1))),
        Reason::AlreadyAssigned
    );
    assert_eq!(
        reason(plan_assign(&organizer("o1"), &s, "o1", Some(&o1))),
        Reason::AlreadyAssigned
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
        Reason::OrganizerAssignsSelfOnly
    );
    assert_eq!(
        reason(plan_assign(&me, &situation(None, false), "o1", Some(&o1))),
        Reason::NoViewAccess
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
        Reason::OrganizerUnassignsOwnOnly
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
        Reason::OrganizersCannotReassign
    );
    assert_eq!(
        reason(plan_reassign(
            &admin(),
            &situation(None, true),
            "o1",
            Some(&o1)
        )),
        Reason::NotAssigned
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
    assert!(plan_status_change(&admin(), &situation(Some("o2"), false), Open, Resolved).unwrap());
    assert!(!plan_status_change(&admin(), &situation(None, false), Resolved, Resolved).unwrap());
    assert!(plan_status_change(&me, &situation(Some("o1"), false), Open, Resolved).unwrap());
    assert!(plan_status_change(&me, &situation(None, true), Open, Resolved).unwrap());
    assert!(plan_status_change(&me, &situation(Some("o2"), true), Open, Resolved).is_err());
    assert!(plan_status_change(&me, &situation(None, false), Open, Resolved).is_err());
}

#[test]
fn a_requested_change_applies_the_rule_of_its_kind() {
    let o1 = user("o1", Role::Organizer, true);
    let held = situation(Some("o2"), true);
    let me = organizer("o1");
    let assign = AssigneeRequest::Assign { to: "o1" };
    let reassign = AssigneeRequest::Reassign { to: "o1" };
    assert_eq!(
        reason(plan_assignee_change(&me, &held, assign, Some(&o1))),
        Reason::AlreadyAssigned
    );
    assert_eq!(
        reason(plan_assignee_change(&me, &held, reassign, Some(&o1))),
        Reason::OrganizersCannotReassign
    );
    assert_eq!(
        reason(plan_assignee_change(
            &me,
            &held,
            AssigneeRequest::Unassign,
            None
        )),
        Reason::OrganizerUnassignsOwnOnly
    );
    assert_eq!(assign.target_id(), Some("o1"));
    assert_eq!(AssigneeRequest::Unassign.target_id(), None);
}
