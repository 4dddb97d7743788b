//! Unit tests of the bulk rules.

use std::collections::HashMap;

use super::*;
use crate::domain::fixtures::{admin, organizer, user};
use crate::error::AppResult;

fn orgs(ids: &[&str]) -> Vec<UserRef> {
    ids.iter()
        .map(|id| user(id, Role::Organizer, true))
        .collect()
}

fn item(id: &str, current: Option<&str>, with_access: &[&str]) -> Option<ItemState> {
    Some(ItemState {
        conversation_id: id.into(),
        current_assignee: current.map(str::to_owned),
        actor_group_view: true,
        targets_with_access: with_access.iter().map(|s| s.to_string()).collect(),
    })
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}

#[test]
fn many_conversations_spread_evenly_in_the_order_sent_across_batches() {
    let targets = orgs(&["o1", "o2", "o3"]);
    let mut turns = StreamState::default();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut order = Vec::new();
    for batch in 0..3 {
        let ids: Vec<String> = (0..7).map(|i| format!("b{batch}-{i}")).collect();
        let items: Vec<_> = ids
            .iter()
            .map(|id| item(id, None, &["o1", "o2", "o3"]))
            .collect();
        for decision in plan_batch(
            BulkAction::Assign,
            &admin(),
            &targets,
            false,
            &mut turns,
            &ids,
            &items,
        ) {
            let ItemOutcome::Assigned { to } = decision.outcome else {
                panic!()
            };
            order.push(to.clone());
            *counts.entry(to).or_default() += 1;
        }
    }
    assert_eq!(&order[..4], ["o1", "o2", "o3", "o1"]);
    let (min, max) = (
        counts.values().min().unwrap(),
        counts.values().max().unwrap(),
    );
    assert!(max - min <= 1, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 21);
}

#[test]
fn without_grant_access_a_turn_of_a_target_lacking_permission_is_refused() {
    let targets = orgs(&["o1", "o2"]);
    let mut turns = StreamState::default();
    let ids = ids(3);
    let items = vec![
        item("c0", None, &["o2"]),
        item("c1", None, &["o1", "o2"]),
        item("c2", None, &["o1"]),
    ];
    let decisions = plan_batch(
        BulkAction::Assign,
        &admin(),
        &targets,
        false,
        &mut turns,
        &ids,
        &items,
    );
    // c0 is o1's turn, but o1 may not reply to it; c1 is o2's turn; c2 is o1's again.
    assert!(matches!(
        decisions[0].outcome,
        ItemOutcome::Refused {
            reason: Reason::NoAccess,
            ..
        }
    ));
    assert_eq!(
        decisions[1].outcome,
        ItemOutcome::Assigned { to: "o2".into() }
    );
    assert_eq!(
        decisions[2].outcome,
        ItemOutcome::Assigned { to: "o1".into() }
    );
    assert!(decisions.iter().all(|d| !d.grant));
}

#[test]
fn with_grant_access_everyone_takes_their_turn_and_grants_are_marked() {
    let targets = orgs(&["o1", "o2"]);
    let mut turns = StreamState::default();
    let ids = ids(2);
    let items = vec![item("c0", None, &["o2"]), item("c1", None, &["o2"])];
    let decisions = plan_batch(
        BulkAction::Assign,
        &admin(),
        &targets,
        true,
        &mut turns,
        &ids,
        &items,
    );
    assert_eq!(
        decisions[0].outcome,
        ItemOutcome::Assigned { to: "o1".into() }
    );
    assert!(decisions[0].grant);
    assert_eq!(
        decisions[1].outcome,
        ItemOutcome::Assigned { to: "o2".into() }
    );
    assert!(!decisions[1].grant);
}

#[test]
fn admins_always_have_access() {
    let targets = vec![user("a2", Role::Admin, true)];
    let decisions = plan_batch(
        BulkAction::Assign,
        &admin(),
        &targets,
        false,
        &mut StreamState::default(),
        &ids(1),
        &[item("c0", None, &[])],
    );
    assert_eq!(
        decisions[0].outcome,
        ItemOutcome::Assigned { to: "a2".into() }
    );
}

#[test]
fn assigned_conversations_are_refused_or_unchanged() {
    let targets = orgs(&["o1", "o2"]);
    let items = vec![
        item("c0", Some("o9"), &["o1"]),
        item("c1", Some("o2"), &["o1"]),
        None,
    ];
    let decisions = plan_batch(
        BulkAction::Assign,
        &admin(),
        &targets,
        false,
        &mut StreamState::default(),
        &ids(3),
        &items,
    );
    assert!(matches!(
        decisions[0].outcome,
        ItemOutcome::Refused {
            reason: Reason::AlreadyAssigned,
            ..
        }
    ));
    assert_eq!(
        decisions[1].outcome,
        ItemOutcome::Unchanged {
            assignee: Some("o2".into())
        }
    );
    assert_eq!(decisions[2].outcome, ItemOutcome::NotFound);
}

#[test]
fn organizers_bulk_assign_only_viewable_unassigned_conversations_to_themselves() {
    let me = organizer("o1");
    let targets = orgs(&["o1"]);
    let mut hidden = item("c2", None, &[]);
    hidden.as_mut().unwrap().actor_group_view = false;
    let items = vec![
        item("c0", None, &["o1"]),
        item("c1", Some("o2"), &["o1"]),
        hidden,
        item("c3", Some("o1"), &[]),
    ];
    let decisions = plan_batch(
        BulkAction::Assign,
        &me,
        &targets,
        false,
        &mut StreamState::default(),
        &ids(4),
        &items,
    );
    assert_eq!(
        decisions[0].outcome,
        ItemOutcome::Assigned { to: "o1".into() }
    );
    assert!(matches!(
        decisions[1].outcome,
        ItemOutcome::Refused {
            reason: Reason::AlreadyAssigned,
            ..
        }
    ));
    // What an organizer may not view is answered exactly as a conversation that does not exist.
    assert_eq!(decisions[2].outcome, ItemOutcome::NotFound);
    assert_eq!(
        decisions[3].outcome,
        ItemOutcome::Unchanged {
            assignee: Some("o1".into())
        }
    );
}

#[test]
fn unassign_rules() {
    let items = vec![
        item("c0", Some("o1"), &[]),
        item("c1", Some("o2"), &[]),
        item("c2", None, &[]),
    ];
    let mine = plan_batch(
        BulkAction::Unassign,
        &organizer("o1"),
        &[],
        false,
        &mut StreamState::default(),
        &ids(3),
        &items,
    );
    assert_eq!(
        mine[0].outcome,
        ItemOutcome::Unassigned { from: "o1".into() }
    );
    assert!(matches!(
        mine[1].outcome,
        ItemOutcome::Refused {
            reason: Reason::OrganizerUnassignsOwnOnly,
            ..
        }
    ));
    assert_eq!(mine[2].outcome, ItemOutcome::Unchanged { assignee: None });
    let all = plan_batch(
        BulkAction::Unassign,
        &admin(),
        &[],
        false,
        &mut StreamState::default(),
        &ids(3),
        &items,
    );
    assert_eq!(
        all[1].outcome,
        ItemOutcome::Unassigned { from: "o2".into() }
    );
}

#[test]
fn reassign_moves_only_assigned_conversations() {
    let targets = orgs(&["o1", "o2"]);
    let items = vec![
        item("c0", Some("o9"), &["o1", "o2"]),
        item("c1", None, &["o1"]),
        item("c2", Some("o2"), &["o1", "o2"]),
    ];
    let decisions = plan_batch(
        BulkAction::Reassign,
        &admin(),
        &targets,
        false,
        &mut StreamState::default(),
        &ids(3),
        &items,
    );
    assert_eq!(
        decisions[0].outcome,
        ItemOutcome::Reassigned {
            from: "o9".into(),
            to: "o1".into()
        }
    );
    assert!(matches!(
        decisions[1].outcome,
        ItemOutcome::Refused {
            reason: Reason::NotAssigned,
            ..
        }
    ));
    assert_eq!(
        decisions[2].outcome,
        ItemOutcome::Unchanged {
            assignee: Some("o2".into())
        }
    );
}

#[test]
fn a_conversation_listed_again_in_the_stream_is_answered_once() {
    let targets = orgs(&["o1", "o2"]);
    let ids = vec!["c0".to_string(), "c0".to_string(), "gone".to_string()];
    let items = vec![
        item("c0", None, &["o1", "o2"]),
        item("c0", None, &["o1", "o2"]),
        None,
    ];
    let mut state = StreamState::default();
    let decisions = plan_batch(
        BulkAction::Assign,
        &admin(),
        &targets,
        false,
        &mut state,
        &ids,
        &items,
    );
    assert_eq!(
        decisions[0].outcome,
        ItemOutcome::Assigned { to: "o1".into() }
    );
    assert_eq!(decisions[1].outcome, ItemOutcome::Duplicate);
    assert_eq!(decisions[2].outcome, ItemOutcome::NotFound);
    // In a later batch too, and the repeat takes no turn.
    let later = plan_batch(
        BulkAction::Assign,
        &admin(),
        &targets,
        false,
        &mut state,
        &["gone".to_string(), "c0".to_string(), "c1".to_string()],
        &[
            None,
            item("c0", Some("o1"), &[]),
            item("c1", None, &["o1", "o2"]),
        ],
    );
    assert_eq!(later[0].outcome, ItemOutcome::Duplicate);
    assert_eq!(later[1].outcome, ItemOutcome::Duplicate);
    assert_eq!(later[2].outcome, ItemOutcome::Assigned { to: "o2".into() });
    let (reason, _) = later[1].outcome.refusal("c0").unwrap();
    assert_eq!(reason, Reason::DuplicateInStream);
}

#[test]
fn options_are_checked_up_front() {
    let named = vec![
        user("o1", Role::Organizer, true),
        user("a2", Role::Admin, true),
        user("gone", Role::Organizer, false),
    ];
    let opts = |ids: &[&str]| BulkOptions {
        assignee_ids: ids.iter().map(|s| s.to_string()).collect(),
        ..BulkOptions::default()
    };
    // `None` for an invalid argument.
    let reason = |r: AppResult<Vec<UserRef>>| match r.unwrap_err() {
        AppError::Refused { reason, .. } => Some(reason),
        AppError::InvalidArgument(_) => None,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        resolve_targets(BulkAction::Assign, &admin(), &opts(&["o1", "a2"]), &named)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        reason(resolve_targets(
            BulkAction::Assign,
            &admin(),
            &opts(&[]),
            &named
        )),
        None
    );
    assert_eq!(
        reason(resolve_targets(
            BulkAction::Assign,
            &admin(),
            &opts(&["ghost"]),
            &named
        )),
        Some(Reason::AssigneeNotFound)
    );
    assert_eq!(
        reason(resolve_targets(
            BulkAction::Assign,
            &admin(),
            &opts(&["gone"]),
            &named
        )),
        Some(Reason::AssigneeInactive)
    );
    assert_eq!(
        reason(resolve_targets(
            BulkAction::Assign,
            &organizer("o1"),
            &opts(&["a2"]),
            &named
        )),
        Some(Reason::OrganizerAssignsSelfOnly)
    );
    assert!(resolve_targets(BulkAction::Assign, &organizer("o1"), &opts(&["o1"]), &named).is_ok());
    assert_eq!(
        reason(resolve_targets(
            BulkAction::Reassign,
            &organizer("o1"),
            &opts(&["o1"]),
            &named
        )),
        Some(Reason::OrganizersCannotReassign)
    );
    let mut grant = opts(&["o1"]);
    grant.grant_access = true;
    assert_eq!(
        reason(resolve_targets(
            BulkAction::Assign,
            &admin(),
            &grant,
            &named
        )),
        None
    );
    assert_eq!(
        reason(resolve_targets(
            BulkAction::Assign,
            &organizer("o1"),
            &grant,
            &named
        )),
        Some(Reason::AdminRequired)
    );
    grant.new_group_name = Some("New".into());
    assert!(resolve_targets(BulkAction::Assign, &admin(), &grant, &named).is_ok());
}

#[test]
fn reassigning_twice_in_one_batch_moves_it_once() {
    let targets = orgs(&["o1", "o2"]);
    let ids = vec!["c0".to_string(), "c0".to_string()];
    let items = vec![
        item("c0", Some("o9"), &["o1", "o2"]),
        item("c0", Some("o9"), &["o1", "o2"]),
    ];
    let decisions = plan_batch(
        BulkAction::Reassign,
        &admin(),
        &targets,
        false,
        &mut StreamState::default(),
        &ids,
        &items,
    );
    assert_eq!(
        decisions[0].outcome,
        ItemOutcome::Reassigned {
            from: "o9".into(),
            to: "o1".into()
        }
    );
    assert_eq!(decisions[1].outcome, ItemOutcome::Duplicate);
}

#[test]
fn the_tally_counts_outcomes_and_assignees() {
    let mut tally = Tally::default();
    let decision = |outcome| ItemDecision {
        conversation_id: "c".into(),
        outcome,
        grant: false,
    };
    tally.record(&decision(ItemOutcome::Assigned { to: "o1".into() }));
    tally.record(&decision(ItemOutcome::Reassigned {
        from: "o2".into(),
        to: "o1".into(),
    }));
    tally.record(&decision(ItemOutcome::NotFound));
    tally.record(&decision(ItemOutcome::Refused {
        reason: Reason::NoAccess,
        message: String::new(),
    }));
    assert_eq!(
        (
            tally.received,
            tally.assigned,
            tally.reassigned,
            tally.not_found,
            tally.refused
        ),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(tally.per_assignee.get("o1"), Some(&2));
}

#[test]
fn turns_of_a_target_deactivated_mid_stream_are_refused() {
    let mut targets = orgs(&["o1", "o2"]);
    targets[1].active = false;
    let items = vec![
        item("c0", None, &["o1", "o2"]),
        item("c1", None, &["o1", "o2"]),
    ];
    let decisions = plan_batch(
        BulkAction::Assign,
        &admin(),
        &targets,
        false,
        &mut StreamState::default(),
        &ids(2),
        &items,
    );
    assert_eq!(
        decisions[0].outcome,
        ItemOutcome::Assigned { to: "o1".into() }
    );
    assert!(matches!(
        decisions[1].outcome,
        ItemOutcome::Refused {
            reason: Reason::AssigneeInactive,
            ..
        }
    ));
}

#[test]
fn malformed_ids_and_missing_conversations_are_refused_in_the_words_of_the_single_rpcs() {
    let malformed = ItemDecision::malformed("has space");
    let (reason, message) = malformed.outcome.refusal("has space").unwrap();
    assert_eq!(reason, Reason::InvalidConversationId);
    assert!(message.contains("has space"));
    let (reason, message) = ItemOutcome::NotFound.refusal("c9").unwrap();
    assert_eq!(reason, Reason::ConversationNotFound);
    assert_eq!(message, AppError::conversation_not_found("c9").to_string());
    assert_eq!(
        ItemOutcome::Assigned { to: "o1".into() }.refusal("c1"),
        None
    );
}
