//! Unit tests of the auto-assignment rules.

use super::*;

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn next_wraps_around() {
    let eligible = ids(&["a", "b", "c"]);
    assert_eq!(next_organizer(&eligible, None), Some("a"));
    assert_eq!(next_organizer(&eligible, Some("a")), Some("b"));
    assert_eq!(next_organizer(&eligible, Some("c")), Some("a"));
    assert_eq!(next_organizer(&[], Some("a")), None);
}

#[test]
fn next_skips_ineligible_organizers_without_losing_its_place() {
    // "b" is inactive or has no reply access for this conversation: it is simply not in the list.
    let eligible = ids(&["a", "c", "d"]);
    assert_eq!(next_organizer(&eligible, Some("a")), Some("c"));
    // For another conversation b is eligible again, and the rotation continues from where it was.
    let everyone = ids(&["a", "b", "c", "d"]);
    assert_eq!(next_organizer(&everyone, Some("a")), Some("b"));
}

#[test]
fn next_copes_with_organizers_added_or_removed_between_calls() {
    assert_eq!(next_organizer(&ids(&["a", "b", "c"]), Some("b")), Some("c"));
    // "bb" joined after b was assigned: it is next.
    assert_eq!(
        next_organizer(&ids(&["a", "b", "bb", "c"]), Some("b")),
        Some("bb")
    );
    // "c" left: wrap around to "a".
    assert_eq!(next_organizer(&ids(&["a", "b"]), Some("b")), Some("a"));
}

#[test]
fn next_after_a_deleted_user_continues_in_id_order() {
    assert_eq!(next_organizer(&ids(&["a", "c", "e"]), Some("d")), Some("e"));
    assert_eq!(next_organizer(&ids(&["a", "c"]), Some("zz")), Some("a"));
}

fn trigger(id: &str, conversation: &str, eligible: &[&str]) -> TriggerState {
    TriggerState {
        trigger_id: Some(id.into()),
        conversation_id: conversation.into(),
        current_assignee: None,
        recorded: None,
        eligible: ids(eligible),
        lapsed_by: vec![],
        holder_unreachable: None,
        holder_availability: None,
    }
}

fn decisions<E>(plan: &BatchPlan<E>) -> Vec<Decision> {
    plan.verdicts()
        .iter()
        .map(|v| match v {
            Verdict::Decided(decision) => decision.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn outcomes<E>(plan: &BatchPlan<E>) -> Vec<AutoOutcome> {
    decisions(plan).into_iter().map(|d| d.outcome).collect()
}

#[test]
fn a_batch_rotates_as_if_its_triggers_came_one_by_one() {
    let everyone = ["a", "b", "c"];
    let batch: Vec<_> = (0..5)
        .map(|i| trigger(&format!("t{i}"), &format!("c{i}"), &everyone))
        .collect();
    let plan = plan_batch(true, Some("b"), Routing::default(), &batch);
    use AutoOutcome::Assigned;
    assert_eq!(
        outcomes(&plan),
        vec![
            Assigned("c".into()),
            Assigned("a".into()),
            Assigned("b".into()),
            Assigned("c".into()),
            Assigned("a".into())
        ]
    );
    assert_eq!(plan.cursor.as_deref(), Some("a"));
}

#[test]
fn assigned_conversations_stay_put_and_do_not_move_the_cursor() {
    let mut held = trigger("t1", "c1", &["a", "b"]);
    held.current_assignee = Some("admin".into());
    let plan = plan_batch(
        true,
        Some("a"),
        Routing::default(),
        [held, trigger("t2", "c2", &["a", "b"])],
    );
    assert_eq!(
        outcomes(&plan),
        vec![
            AutoOutcome::AlreadyAssigned("admin".into()),
            AutoOutcome::Assigned("b".into())
        ]
    );
}

#[test]
fn the_same_conversation_twice_in_a_batch_is_assigned_once() {
    let plan = plan_batch(
        true,
        None,
        Routing::default(),
        [
            trigger("t1", "c1", &["a", "b"]),
            trigger("t2", "c1", &["a", "b"]),
        ],
    );
    assert_eq!(
        outcomes(&plan),
        vec![
            AutoOutcome::Assigned("a".into()),
            AutoOutcome::AlreadyAssigned("a".into())
        ]
    );
    assert_eq!(
        plan.verdicts()
            .iter()
            .filter(|v| v.assigns().is_some())
            .count(),
        1
    );
    assert_eq!(plan.cursor.as_deref(), Some("a"));
}

#[test]
fn redelivered_triggers_repeat_their_first_outcome_and_write_nothing() {
    let mut recorded = trigger("t1", "c1", &["a", "b"]);
    recorded.recorded = Some(RecordedTrigger {
        conversation_id: "c1".into(),
        outcome: AutoOutcome::Assigned("b".into()),
    });
    recorded.current_assignee = Some("b".into());
    let plan = plan_batch(
        true,
        Some("b"),
        Routing::default(),
        [
            recorded,
            trigger("t2", "c2", &["a", "b"]),
            trigger("t2", "c2", &["a", "b"]),
        ],
    );
    assert_eq!(
        decisions(&plan),
        vec![
            Decision {
                outcome: AutoOutcome::Assigned("b".into()),
                duplicate: true
            },
            Decision {
                outcome: AutoOutcome::Assigned("a".into()),
                duplicate: false
            },
            Decision {
                outcome: AutoOutcome::Assigned("a".into()),
                duplicate: true
            },
        ]
    );
    assert_eq!(
        plan.verdicts()
            .iter()
            .filter(|v| v.assigns().is_some())
            .count(),
        1
    );
}

#[test]
fn a_trigger_id_reused_for_another_conversation_is_refused_in_the_database_or_the_batch() {
    let mut recorded = trigger("t1", "c2", &["a", "b"]);
    recorded.recorded = Some(RecordedTrigger {
        conversation_id: "c1".into(),
        outcome: AutoOutcome::Assigned("a".into()),
    });
    let plan = plan_batch(
        true,
        None,
        Routing::default(),
        [
            recorded,
            trigger("t2", "c3", &["a", "b"]),
            trigger("t2", "c4", &["a", "b"]),
        ],
    );
    assert_eq!(
        plan.verdicts(),
        vec![
            Verdict::TriggerReused {
                first_conversation: "c1".into()
            },
            Verdict::Decided(Decision {
                outcome: AutoOutcome::Assigned("a".into()),
                duplicate: false
            }),
            Verdict::TriggerReused {
                first_conversation: "c3".into()
            },
        ]
    );
    assert_eq!(plan.cursor.as_deref(), Some("a"));
}

#[test]
fn nobody_eligible_or_switched_off_assigns_nothing() {
    let plan = plan_batch(
        true,
        Some("a"),
        Routing::default(),
        [trigger("t1", "c1", &[])],
    );
    assert_eq!(outcomes(&plan), vec![AutoOutcome::Queued]);
    assert_eq!(plan.cursor.as_deref(), Some("a"));
    let plan = plan_batch(
        false,
        Some("a"),
        Routing::default(),
        [trigger("t1", "c1", &["a", "b"])],
    );
    assert_eq!(outcomes(&plan), vec![AutoOutcome::Disabled]);
}

fn waiting(conversation: &str, eligible: &[&str]) -> TriggerState {
    TriggerState {
        trigger_id: None,
        ..trigger("unused", conversation, eligible)
    }
}

#[test]
fn waiting_conversations_drain_first_in_order_and_those_nobody_can_take_stay() {
    let plan = plan_batch(
        true,
        Some("a"),
        Routing::default(),
        [
            waiting("w1", &["a", "b"]),
            waiting("w2", &[]),
            waiting("w3", &["a", "b"]),
            trigger("t1", "c1", &["a", "b"]),
        ],
    );
    assert_eq!(
        outcomes(&plan),
        vec![
            AutoOutcome::Assigned("b".into()),
            AutoOutcome::Queued,
            AutoOutcome::Assigned("a".into()),
            AutoOutcome::Assigned("b".into()),
        ]
    );
    // Waiting conversations carry no trigger id, so two of them are never taken for a redelivery.
    assert!(decisions(&plan).iter().all(|d| !d.duplicate), "{plan:?}");
}

#[test]
fn a_conversation_is_never_routed_to_who_let_its_wait_lapse() {
    let lapsed = TriggerState {
        lapsed_by: ids(&["b"]),
        ..waiting("w1", &["a", "b", "c"])
    };
    let nobody_else = TriggerState {
        lapsed_by: ids(&["a"]),
        ..trigger("t1", "c1", &["a"])
    };
    // After "a", round-robin would give w1 to "b", who let it lapse: "c" gets it; t1 has nobody left.
    let plan = plan_batch(true, Some("a"), Routing::default(), [lapsed, nobody_else]);
    assert_eq!(
        outcomes(&plan),
        vec![AutoOutcome::Assigned("c".into()), AutoOutcome::Queued]
    );
}

#[test]
fn outcomes_round_trip_through_the_database_form() {
    for outcome in [
        AutoOutcome::Assigned("a".into()),
        AutoOutcome::AlreadyAssigned("b".into()),
        AutoOutcome::NoEligibleOrganizer,
        AutoOutcome::Disabled,
        AutoOutcome::Queued,
    ] {
        let assignee = outcome.assignee().map(str::to_owned);
        assert_eq!(
            AutoOutcome::from_record(outcome.kind(), assignee),
            Some(outcome)
        );
    }
    assert_eq!(AutoOutcome::from_record(OutcomeKind::Assigned, None), None);
}

#[test]
fn a_drain_places_only_what_still_waits_open_and_unassigned() {
    use crate::domain::model::{Conversation, ConversationStatus};
    let waiting = Conversation {
        conversation_id: "c1".into(),
        member_id: "m1".into(),
        member_tags: vec![],
        status: ConversationStatus::Open,
        assignee_id: None,
        assigned_at: None,
        assigned_by: None,
        version: 1,
        updated_at: chrono::Utc::now(),
        awaiting_reply_since: None,
        reply_due_at: None,
        lapsed_by: vec![],
    };
    assert!(still_waits(true, &waiting));
    // Resolved and reopened meanwhile: open and unassigned, but out of the queue.
    assert!(!still_waits(false, &waiting));
    let resolved = Conversation {
        status: ConversationStatus::Resolved,
        ..waiting.clone()
    };
    assert!(!still_waits(true, &resolved));
    let assigned = Conversation {
        assignee_id: Some("o1".into()),
        ..waiting
    };
    assert!(!still_waits(true, &assigned));
}
