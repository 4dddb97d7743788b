//! Bulk assign, unassign and reassign as pure decisions over one batch of a stream.

use std::collections::HashMap;

use crate::domain::model::{Actor, Role, UserRef};
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    Assign,
    Unassign,
    Reassign,
}

/// What a bulk request asks for, before the stream's conversations arrive.
#[derive(Debug, Clone, Default)]
pub struct BulkOptions {
    /// Users named one by one, in the order given.
    pub assignee_ids: Vec<String>,
    /// Active organizers of these groups (found in the directory), in the order given.
    pub group_organizers: Vec<String>,
    /// The "All Access Groups" toggle: assign to organizers without permission and record it in a new group.
    pub grant_access: bool,
    pub new_group_name: Option<String>,
}

/// Checks a request's options up front and returns the targets in their round-robin order. A bad option
/// fails the whole call before anything is written.
pub fn resolve_targets(
    action: BulkAction,
    actor: &Actor,
    options: &BulkOptions,
    named_users: &[UserRef],
) -> AppResult<Vec<UserRef>> {
    if action == BulkAction::Reassign && actor.role == Role::Organizer {
        return Err(AppError::denied(
            "ORGANIZERS_CANNOT_REASSIGN",
            "organizers cannot reassign conversations, in bulk or otherwise; ask an admin",
        ));
    }
    if action == BulkAction::Unassign {
        return Ok(Vec::new());
    }
    if options.grant_access {
        if actor.role == Role::Organizer {
            return Err(AppError::denied(
                "ADMIN_REQUIRED",
                "only admins can grant access by creating an access group",
            ));
        }
        if options.new_group_name.is_none() {
            return Err(AppError::invalid(
                "options.new_access_group_name",
                "grant_access needs new_access_group_name: the access group that records the new permissions",
            ));
        }
    }
    let mut targets: Vec<UserRef> = Vec::new();
    for id in &options.assignee_ids {
        let user = named_users
            .iter()
            .find(|u| &u.user_id == id)
            .ok_or_else(|| {
                AppError::invalid(
                    "options.assignee_ids",
                    format!("user {id:?} is not a user of this campaign"),
                )
            })?;
        if !user.active {
            return Err(AppError::invalid(
                "options.assignee_ids",
                format!("user {id:?} is inactive and cannot be assigned conversations"),
            ));
        }
        targets.push(user.clone());
    }
    for id in &options.group_organizers {
        if !targets.iter().any(|t| &t.user_id == id) {
            targets.push(UserRef {
                user_id: id.clone(),
                role: Role::Organizer,
                active: true,
            });
        }
    }
    if targets.is_empty() {
        return Err(AppError::invalid(
            "options",
            "no one to assign to: name assignee_ids, or access_group_ids with active organizers",
        ));
    }
    if actor.role == Role::Organizer
        && let Some(other) = targets.iter().find(|t| t.user_id != actor.user_id)
    {
        let what = if other.role == Role::Admin {
            "an admin"
        } else {
            "another user"
        };
        return Err(AppError::denied(
            "ORGANIZER_ASSIGNS_SELF_ONLY",
            format!(
                "organizers can only bulk assign conversations to themselves; {:?} is {what}",
                other.user_id
            ),
        ));
    }
    Ok(targets)
}

/// One conversation of a batch as read (locked) from the database; `None` in the batch when it does not exist.
#[derive(Debug, Clone)]
pub struct ItemState {
    pub conversation_id: String,
    pub current_assignee: Option<String>,
    /// Whether an access group lets the actor view it (matters for organizers).
    pub actor_can_view: bool,
    /// The targets that an access group lets reply to it.
    pub targets_with_access: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Assigned {
        to: String,
    },
    Reassigned {
        from: String,
        to: String,
    },
    Unassigned {
        from: String,
    },
    /// Already as asked; nothing written.
    Unchanged {
        assignee: Option<String>,
    },
    Refused {
        reason: &'static str,
        message: String,
    },
    NotFound,
}

impl ItemOutcome {
    /// A short name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ItemOutcome::Assigned { .. } => "assigned",
            ItemOutcome::Reassigned { .. } => "reassigned",
            ItemOutcome::Unassigned { .. } => "unassigned",
            ItemOutcome::Unchanged { .. } => "unchanged",
            ItemOutcome::Refused { .. } => "refused",
            ItemOutcome::NotFound => "not_found",
        }
    }
}

/// The decision for one conversation; `grant` marks an assignment to an organizer who lacked permission,
/// to be recorded in the new access group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDecision {
    pub conversation_id: String,
    pub outcome: ItemOutcome,
    pub grant: bool,
}

/// Where a stream's round-robin stands; carried from batch to batch.
#[derive(Debug, Clone, Default)]
pub struct Rotation {
    next: usize,
}

impl Rotation {
    /// The target whose turn it is. A turn is used whatever becomes of the conversation, so every target
    /// gets every n-th conversation of the stream.
    fn next_target<'t>(&mut self, targets: &'t [UserRef]) -> &'t UserRef {
        let target = &targets[self.next % targets.len()];
        self.next += 1;
        target
    }
}

/// Whether `target` may reply to the conversation as things stand (admins always may).
fn has_access(target: &UserRef, item: &ItemState) -> bool {
    target.role == Role::Admin || item.targets_with_access.contains(&target.user_id)
}

/// Decides one batch. `items[i]` is `None` when `ids[i]` does not exist. A conversation listed again in
/// the same batch is unchanged by its later listings.
pub fn plan_batch(
    action: BulkAction,
    actor: &Actor,
    targets: &[UserRef],
    grant_access: bool,
    rotation: &mut Rotation,
    ids: &[String],
    items: &[Option<ItemState>],
) -> Vec<ItemDecision> {
    // Each conversation's assignee after its first listing in this batch.
    let mut decided: HashMap<&str, Option<String>> = HashMap::new();
    let mut decisions = Vec::with_capacity(ids.len());
    for (id, item) in ids.iter().zip(items) {
        let (outcome, grant) = match (item, decided.get(id.as_str())) {
            (None, _) => (ItemOutcome::NotFound, false),
            (Some(_), Some(after)) => (
                ItemOutcome::Unchanged {
                    assignee: after.clone(),
                },
                false,
            ),
            (Some(item), None) => {
                let current = item.current_assignee.clone();
                decide(
                    action,
                    actor,
                    targets,
                    grant_access,
                    rotation,
                    item,
                    current,
                )
            }
        };
        if let Some(item) = item {
            let after = match &outcome {
                ItemOutcome::Assigned { to } | ItemOutcome::Reassigned { to, .. } => {
                    Some(to.clone())
                }
                ItemOutcome::Unassigned { .. } => None,
                _ => item.current_assignee.clone(),
            };
            decided.entry(id).or_insert(after);
        }
        decisions.push(ItemDecision {
            conversation_id: id.clone(),
            outcome,
            grant,
        });
    }
    decisions
}

/// Counts for the summary that ends a stream; bounded by the number of targets, not of conversations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub received: u64,
    pub assigned: u64,
    pub reassigned: u64,
    pub unassigned: u64,
    pub unchanged: u64,
    pub refused: u64,
    pub not_found: u64,
    /// Conversations assigned or reassigned to each user.
    pub per_assignee: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    pub fn record(&mut self, decision: &ItemDecision) {
        self.received += 1;
        match &decision.outcome {
            ItemOutcome::Assigned { to } => {
                self.assigned += 1;
                *self.per_assignee.entry(to.clone()).or_default() += 1;
            }
            ItemOutcome::Reassigned { to, .. } => {
                self.reassigned += 1;
                *self.per_assignee.entry(to.clone()).or_default() += 1;
            }
            ItemOutcome::Unassigned { .. } => self.unassigned += 1,
            ItemOutcome::Unchanged { .. } => self.unchanged += 1,
            ItemOutcome::Refused { .. } => self.refused += 1,
            ItemOutcome::NotFound => self.not_found += 1,
        }
    }
}

fn refused(reason: &'static str, message: String) -> (ItemOutcome, bool) {
    (ItemOutcome::Refused { reason, message }, false)
}

/// A target deactivated while the stream ran keeps its turns, and they are refused.
fn inactive(id: &str, target: &UserRef) -> (ItemOutcome, bool) {
    refused(
        "ASSIGNEE_INACTIVE",
        format!(
            "{:?}, whose turn it was for {id:?}, has been deactivated",
            target.user_id
        ),
    )
}

fn no_access(id: &str, target: &UserRef) -> (ItemOutcome, bool) {
    refused(
        "NO_ACCESS",
        format!(
            "{:?}, whose turn it was, may not reply to {id:?}; turn on grant_access to give them access in a new \
             access group",
            target.user_id
        ),
    )
}

fn decide(
    action: BulkAction,
    actor: &Actor,
    targets: &[UserRef],
    grant_access: bool,
    rotation: &mut Rotation,
    item: &ItemState,
    current: Option<String>,
) -> (ItemOutcome, bool) {
    let id = &item.conversation_id;
    match action {
        BulkAction::Unassign => match current {
            None => (ItemOutcome::Unchanged { assignee: None }, false),
            Some(holder) if actor.role == Role::Organizer && holder != actor.user_id => refused(
                "ORGANIZER_UNASSIGNS_OWN_ONLY",
                format!(
                    "{id:?} is assigned to {holder:?}; organizers can only unassign their own conversations"
                ),
            ),
            Some(holder) => (ItemOutcome::Unassigned { from: holder }, false),
        },
        BulkAction::Assign if actor.role == Role::Organizer => match current {
            Some(holder) if holder == actor.user_id => (
                ItemOutcome::Unchanged {
                    assignee: Some(holder),
                },
                false,
            ),
            _ if !item.actor_can_view => refused(
                "NO_VIEW_ACCESS",
                format!("no access group lets you view {id:?}"),
            ),
            Some(holder) => refused(
                "ALREADY_ASSIGNED",
                format!("{id:?} is already assigned to {holder:?}; organizers cannot reassign"),
            ),
            None => (
                ItemOutcome::Assigned {
                    to: actor.user_id.clone(),
                },
                false,
            ),
        },
        BulkAction::Assign => match current {
            Some(holder) if targets.iter().any(|t| t.user_id == holder) => (
                ItemOutcome::Unchanged {
                    assignee: Some(holder),
                },
                false,
            ),
            Some(holder) => refused(
                "ALREADY_ASSIGNED",
                format!("{id:?} is already assigned to {holder:?}; use BulkReassign to move it"),
            ),
            None => {
                let target = rotation.next_target(targets);
                if !target.active {
                    return inactive(id, target);
                }
                match (has_access(target, item), grant_access) {
                    (false, false) => no_access(id, target),
                    (access, _) => (
                        ItemOutcome::Assigned {
                            to: target.user_id.clone(),
                        },
                        !access,
                    ),
                }
            }
        },
        BulkAction::Reassign => match current {
            None => refused(
                "NOT_ASSIGNED",
                format!("{id:?} is not assigned to anyone; use BulkAssign"),
            ),
            Some(holder) => {
                let target = rotation.next_target(targets);
                if !target.active {
                    return inactive(id, target);
                }
                match (
                    target.user_id == holder,
                    has_access(target, item),
                    grant_access,
                ) {
                    (true, _, _) => (
                        ItemOutcome::Unchanged {
                            assignee: Some(holder),
                        },
                        false,
                    ),
                    (false, false, false) => no_access(id, target),
                    (false, access, _) => (
                        ItemOutcome::Reassigned {
                            from: holder,
                            to: target.user_id.clone(),
                        },
                        !access,
                    ),
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{admin, organizer, user};

    fn orgs(ids: &[&str]) -> Vec<UserRef> {
        ids.iter()
            .map(|id| user(id, Role::Organizer, true))
            .collect()
    }

    fn item(id: &str, current: Option<&str>, with_access: &[&str]) -> Option<ItemState> {
        Some(ItemState {
            conversation_id: id.into(),
            current_assignee: current.map(str::to_owned),
            actor_can_view: true,
            targets_with_access: with_access.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn many_conversations_spread_evenly_in_the_order_sent_across_batches() {
        let targets = orgs(&["o1", "o2", "o3"]);
        let mut rotation = Rotation::default();
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
                &mut rotation,
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
        let mut rotation = Rotation::default();
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
            &mut rotation,
            &ids,
            &items,
        );
        // c0 is o1's turn, but o1 may not reply to it; c1 is o2's turn; c2 is o1's again.
        assert!(matches!(
            decisions[0].outcome,
            ItemOutcome::Refused {
                reason: "NO_ACCESS",
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
        let mut rotation = Rotation::default();
        let ids = ids(2);
        let items = vec![item("c0", None, &["o2"]), item("c1", None, &["o2"])];
        let decisions = plan_batch(
            BulkAction::Assign,
            &admin(),
            &targets,
            true,
            &mut rotation,
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
            &mut Rotation::default(),
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
            &mut Rotation::default(),
            &ids(3),
            &items,
        );
        assert!(matches!(
            decisions[0].outcome,
            ItemOutcome::Refused {
                reason: "ALREADY_ASSIGNED",
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
        hidden.as_mut().unwrap().actor_can_view = false;
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
            &mut Rotation::default(),
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
                reason: "ALREADY_ASSIGNED",
                ..
            }
        ));
        assert!(matches!(
            decisions[2].outcome,
            ItemOutcome::Refused {
                reason: "NO_VIEW_ACCESS",
                ..
            }
        ));
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
            &mut Rotation::default(),
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
                reason: "ORGANIZER_UNASSIGNS_OWN_ONLY",
                ..
            }
        ));
        assert_eq!(mine[2].outcome, ItemOutcome::Unchanged { assignee: None });
        let all = plan_batch(
            BulkAction::Unassign,
            &admin(),
            &[],
            false,
            &mut Rotation::default(),
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
            &mut Rotation::default(),
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
                reason: "NOT_ASSIGNED",
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
    fn a_conversation_listed_twice_sees_its_first_outcome() {
        let targets = orgs(&["o1", "o2"]);
        let ids = vec!["c0".to_string(), "c0".to_string()];
        let items = vec![
            item("c0", None, &["o1", "o2"]),
            item("c0", None, &["o1", "o2"]),
        ];
        let decisions = plan_batch(
            BulkAction::Assign,
            &admin(),
            &targets,
            false,
            &mut Rotation::default(),
            &ids,
            &items,
        );
        assert_eq!(
            decisions[0].outcome,
            ItemOutcome::Assigned { to: "o1".into() }
        );
        assert_eq!(
            decisions[1].outcome,
            ItemOutcome::Unchanged {
                assignee: Some("o1".into())
            }
        );
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
        let reason = |r: AppResult<Vec<UserRef>>| match r.unwrap_err() {
            AppError::PermissionDenied { reason, .. } => reason,
            AppError::InvalidArgument { .. } => "INVALID",
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
            "INVALID"
        );
        assert_eq!(
            reason(resolve_targets(
                BulkAction::Assign,
                &admin(),
                &opts(&["ghost"]),
                &named
            )),
            "INVALID"
        );
        assert_eq!(
            reason(resolve_targets(
                BulkAction::Assign,
                &admin(),
                &opts(&["gone"]),
                &named
            )),
            "INVALID"
        );
        assert_eq!(
            reason(resolve_targets(
                BulkAction::Assign,
                &organizer("o1"),
                &opts(&["a2"]),
                &named
            )),
            "ORGANIZER_ASSIGNS_SELF_ONLY"
        );
        assert!(
            resolve_targets(BulkAction::Assign, &organizer("o1"), &opts(&["o1"]), &named).is_ok()
        );
        assert_eq!(
            reason(resolve_targets(
                BulkAction::Reassign,
                &organizer("o1"),
                &opts(&["o1"]),
                &named
            )),
            "ORGANIZERS_CANNOT_REASSIGN"
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
            "INVALID"
        );
        assert_eq!(
            reason(resolve_targets(
                BulkAction::Assign,
                &organizer("o1"),
                &grant,
                &named
            )),
            "ADMIN_REQUIRED"
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
            &mut Rotation::default(),
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
        assert_eq!(
            decisions[1].outcome,
            ItemOutcome::Unchanged {
                assignee: Some("o1".into())
            }
        );
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
            reason: "X",
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
            &mut Rotation::default(),
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
                reason: "ASSIGNEE_INACTIVE",
                ..
            }
        ));
    }
}
