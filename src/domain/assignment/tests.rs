//! Unit tests of the assignment rules.

use super::*;
use crate::domain::fixtures::{admin, organizer, user};

/// A conversation at version 3; `can_view` is what `may_view` said for the actor (always true for admins).
fn situation(current: Option<&str>, can_view: bool) -> Situation<'_> {
    Situation {
        conversation_id: "c1",
        current_assignee: current,
        version: 3,
        actor_can_view: can_view,
    }
}

fn reason<T: std::fmt::Debug>(result: AppResult<T>) -> Reason {
    result.unwrap_err().reason().expect("a refusal")
}

fn assign(to: &str) -> AssigneeRequest<'_> {
    AssigneeRequest::Assign { to }
}

fn reassign(to: &str) -> AssigneeRequest<'_> {
    AssigneeRequest::Reassign { to }
}

fn plan(
    actor: &Actor,
    situation: &Situation<'_>,
    request: AssigneeRequest<'_>,
    target: Option<&UserRef>,
) -> AppResult<Plan> {
    plan_assignee_change(actor, situation, request, target, None)
}

fn assigned_to(to: &str) -> Plan {
    Plan::Change {
        action: AssignmentAction::Assign,
        to: Some(to.into()),
    }
}

#[test]
fn admin_assigns_unassigned_conversation_to_anyone_active() {
    let org = user("o1", Role::Organizer, true);
    let other_admin = user("a2", Role::Admin, true);
    let s = situation(None, true);
    assert_eq!(
        plan(&admin(), &s, assign("o1"), Some(&org)).unwrap(),
        assigned_to("o1")
    );
    assert_eq!(
        plan(&admin(), &s, assign("a2"), Some(&other_admin)).unwrap(),
        assigned_to("a2")
    );
}

#[test]
fn nobody_assigns_to_unknown_or_inactive_users() {
    let s = situation(None, true);
    assert_eq!(
        reason(plan(&admin(), &s, assign("ghost"), None)),
        Reason::AssigneeNotFound
    );
    let gone = user("o1", Role::Organizer, false);
    assert_eq!(
        reason(plan(&admin(), &s, assign("o1"), Some(&gone))),
        Reason::AssigneeInactive
    );
    let held = situation(Some("o2"), true);
    assert_eq!(
        reason(plan(&admin(), &held, reassign("o1"), Some(&gone))),
        Reason::AssigneeInactive
    );
}

#[test]
fn assign_over_another_holder_is_a_precondition_failure_naming_the_holder() {
    let o1 = user("o1", Role::Organizer, true);
    let s = situation(Some("o2"), true);
    let err = plan(&admin(), &s, assign("o1"), Some(&o1)).unwrap_err();
    assert_eq!(err.reason(), Some(Reason::AlreadyAssigned));
    assert!(err.to_string().contains("ReassignConversation"));
    match err {
        AppError::Refused { facts, .. } => assert_eq!(facts, vec![("assignee_id", "o2".into())]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        reason(plan(&organizer("o1"), &s, assign("o1"), Some(&o1))),
        Reason::AlreadyAssigned
    );
}

#[test]
fn assigning_the_current_holder_again_changes_nothing() {
    let o1 = user("o1", Role::Organizer, true);
    let s = situation(Some("o1"), true);
    assert_eq!(
        plan(&admin(), &s, assign("o1"), Some(&o1)).unwrap(),
        Plan::Unchanged
    );
    assert_eq!(
        plan(&organizer("o1"), &s, assign("o1"), Some(&o1)).unwrap(),
        Plan::Unchanged
    );
}

#[test]
fn organizers_assign_only_to_themselves() {
    let me = organizer("o1");
    let o1 = user("o1", Role::Organizer, true);
    let o2 = user("o2", Role::Organizer, true);
    assert_eq!(
        plan(&me, &situation(None, true), assign("o1"), Some(&o1)).unwrap(),
        assigned_to("o1")
    );
    assert_eq!(
        reason(plan(&me, &situation(None, true), assign("o2"), Some(&o2))),
        Reason::OrganizerAssignsSelfOnly
    );
}

#[test]
fn what_the_actor_may_not_view_is_not_found_before_any_other_rule() {
    let me = organizer("o1");
    let o1 = user("o1", Role::Organizer, true);
    let hidden = situation(Some("o2"), false);
    for request in [assign("o1"), reassign("o1"), AssigneeRequest::Unassign] {
        assert_eq!(
            reason(plan(&me, &hidden, request, Some(&o1))),
            Reason::ConversationNotFound
        );
        // Even a stale expected_version is not revealed.
        let stale = plan_assignee_change(&me, &hidden, request, Some(&o1), Some(99));
        assert_eq!(reason(stale), Reason::ConversationNotFound);
    }
    use ConversationStatus::{Open, Resolved};
    assert_eq!(
        reason(plan_status_change(&me, &hidden, Open, Resolved)),
        Reason::ConversationNotFound
    );
    let not_found = plan(&me, &hidden, assign("o1"), Some(&o1)).unwrap_err();
    assert_eq!(
        not_found.to_string(),
        AppError::conversation_not_found("c1").to_string()
    );
}

#[test]
fn unassign_rules() {
    let me = organizer("o1");
    let unassigned = Plan::Change {
        action: AssignmentAction::Unassign,
        to: None,
    };
    assert_eq!(
        plan(
            &admin(),
            &situation(Some("o2"), true),
            AssigneeRequest::Unassign,
            None
        )
        .unwrap(),
        unassigned
    );
    assert_eq!(
        plan(
            &me,
            &situation(Some("o1"), true),
            AssigneeRequest::Unassign,
            None
        )
        .unwrap(),
        unassigned
    );
    assert_eq!(
        reason(plan(
            &me,
            &situation(Some("o2"), true),
            AssigneeRequest::Unassign,
            None
        )),
        Reason::OrganizerUnassignsOwnOnly
    );
    assert_eq!(
        plan(&me, &situation(None, true), AssigneeRequest::Unassign, None).unwrap(),
        Plan::Unchanged
    );
}

#[test]
fn only_admins_reassign_and_only_assigned_conversations() {
    let o1 = user("o1", Role::Organizer, true);
    let held = situation(Some("o2"), true);
    assert_eq!(
        plan(&admin(), &held, reassign("o1"), Some(&o1)).unwrap(),
        Plan::Change {
            action: AssignmentAction::Reassign,
            to: Some("o1".into())
        }
    );
    assert_eq!(
        reason(plan(&organizer("o1"), &held, reassign("o1"), Some(&o1))),
        Reason::OrganizersCannotReassign
    );
    assert_eq!(
        reason(plan(
            &admin(),
            &situation(None, true),
            reassign("o1"),
            Some(&o1)
        )),
        Reason::NotAssigned
    );
    assert_eq!(
        plan(
            &admin(),
            &situation(Some("o1"), true),
            reassign("o1"),
            Some(&o1)
        )
        .unwrap(),
        Plan::Unchanged
    );
}

#[test]
fn version_check_aborts_on_a_stale_read_and_names_both_versions() {
    let o1 = user("o1", Role::Organizer, true);
    let s = situation(None, true);
    assert!(plan_assignee_change(&admin(), &s, assign("o1"), Some(&o1), Some(3)).is_ok());
    let err = plan_assignee_change(&admin(), &s, assign("o1"), Some(&o1), Some(2)).unwrap_err();
    assert_eq!(err.reason(), Some(Reason::VersionMismatch));
    match err {
        AppError::Refused { facts, .. } => assert_eq!(
            facts,
            vec![
                ("current_version", "3".into()),
                ("expected_version", "2".into())
            ]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn status_changes_never_need_the_assignment_to_change() {
    use ConversationStatus::{Open, Resolved};
    let me = organizer("o1");
    assert!(plan_status_change(&admin(), &situation(Some("o2"), true), Open, Resolved).unwrap());
    assert!(!plan_status_change(&admin(), &situation(None, true), Resolved, Resolved).unwrap());
    assert!(plan_status_change(&me, &situation(Some("o1"), true), Open, Resolved).unwrap());
    assert!(plan_status_change(&me, &situation(None, true), Open, Resolved).unwrap());
    assert_eq!(
        reason(plan_status_change(
            &me,
            &situation(Some("o2"), true),
            Open,
            Resolved
        )),
        Reason::AssignedToOther
    );
}

#[test]
fn a_requested_change_names_its_target() {
    assert_eq!(assign("o1").target_id(), Some("o1"));
    assert_eq!(reassign("o2").target_id(), Some("o2"));
    assert_eq!(AssigneeRequest::Unassign.target_id(), None);
}

#[test]
fn what_an_organizer_may_never_do_is_refused_before_a_stale_version() {
    let me = organizer("o1");
    let o1 = user("o1", Role::Organizer, true);
    let held = situation(Some("o2"), true);
    let stale = Some(99);
    let reassign = plan_assignee_change(&me, &held, reassign("o1"), Some(&o1), stale);
    assert_eq!(reason(reassign), Reason::OrganizersCannotReassign);
    let for_other = plan_assignee_change(&me, &held, assign("o2"), None, stale);
    assert_eq!(reason(for_other), Reason::OrganizerAssignsSelfOnly);
    let state_dependent = plan_assignee_change(&me, &held, assign("o1"), Some(&o1), stale);
    assert_eq!(reason(state_dependent), Reason::VersionMismatch);
}
