//! Bulk assign, unassign and reassign as pure decisions over one batch of a stream.

use std::collections::HashSet;

use crate::domain::access::{GroupGrants, may_view};
use crate::domain::model::{Actor, Role, UserRef};
use crate::error::{AppError, Reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    Assign,
    Unassign,
    Reassign,
}

impl BulkAction {
    /// A short name for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            BulkAction::Assign => "assign",
            BulkAction::Unassign => "unassign",
            BulkAction::Reassign => "reassign",
        }
    }
}

/// One conversation of a batch as read (locked) from the database; `None` in the batch when it does not exist.
#[derive(Debug, Clone)]
pub struct ItemState {
    pub conversation_id: String,
    pub current_assignee: Option<String>,
    /// Whether an access group lets the actor view it (organizers also see what they hold).
    pub actor_group_view: bool,
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
        reason: Reason,
        message: String,
    },
    /// Listed earlier in the stream and answered there; nothing written.
    Duplicate,
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
            ItemOutcome::Duplicate => "duplicate",
            ItemOutcome::NotFound => "not_found",
        }
    }

    /// Why a conversation was not changed as asked, worded as the single-conversation RPCs word it.
    pub fn refusal(&self, conversation_id: &str) -> Option<(Reason, String)> {
        match self {
            ItemOutcome::Refused { reason, message } => Some((*reason, message.clone())),
            ItemOutcome::NotFound => {
                let err = AppError::conversation_not_found(conversation_id);
                Some((Reason::ConversationNotFound, err.to_string()))
            }
            ItemOutcome::Duplicate => Some((
                Reason::DuplicateInStream,
                format!(
                    "conversation {conversation_id:?} was listed earlier in this stream and answered there"
                ),
            )),
            _ => None,
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

impl ItemDecision {
    /// A conversation id that is not a valid id: refused on its own, it never stops the others.
    pub fn malformed(conversation_id: &str) -> Self {
        Self {
            conversation_id: conversation_id.to_owned(),
            outcome: ItemOutcome::Refused {
                reason: Reason::InvalidConversationId,
                message: format!("{conversation_id:?} is not a valid conversation id"),
            },
            grant: false,
        }
    }
}

/// Where a stream stands, carried from batch to batch: whose turn is next, and which conversations it has
/// answered (a conversation listed again is answered once). The set grows with the stream's distinct ids.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    next: usize,
    answered: HashSet<String>,
}

impl StreamState {
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

/// Decides one batch. `items[i]` is `None` when `ids[i]` does not exist. In order: a conversation the
/// stream answered before is a duplicate; one the actor may not view is not found (exactly as if it did
/// not exist); the rest follow the rules of `action`.
pub fn plan_batch(
    action: BulkAction,
    actor: &Actor,
    targets: &[UserRef],
    grant_access: bool,
    state: &mut StreamState,
    ids: &[String],
    items: &[Option<ItemState>],
) -> Vec<ItemDecision> {
    let mut decisions = Vec::with_capacity(ids.len());
    for (id, item) in ids.iter().zip(items) {
        let first_listing = state.answered.insert(id.clone());
        let visible = item.as_ref().filter(|item| {
            let grants = GroupGrants {
                view: item.actor_group_view,
                reply: false,
            };
            may_view(&actor.as_user(), item.current_assignee.as_deref(), grants)
        });
        let (outcome, grant) = match visible {
            _ if !first_listing => (ItemOutcome::Duplicate, false),
            None => (ItemOutcome::NotFound, false),
            Some(item) => decide(action, actor, targets, grant_access, state, item),
        };
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
            ItemOutcome::Unchanged { .. } | ItemOutcome::Duplicate => self.unchanged += 1,
            ItemOutcome::Refused { .. } => self.refused += 1,
            ItemOutcome::NotFound => self.not_found += 1,
        }
    }
}

fn refused(reason: Reason, message: String) -> (ItemOutcome, bool) {
    (ItemOutcome::Refused { reason, message }, false)
}

/// A target deactivated while the stream ran keeps its turns, and they are refused.
fn inactive(id: &str, target: &UserRef) -> (ItemOutcome, bool) {
    refused(
        Reason::AssigneeInactive,
        format!(
            "{:?}, whose turn it was for {id:?}, has been deactivated",
            target.user_id
        ),
    )
}

fn no_access(id: &str, target: &UserRef) -> (ItemOutcome, bool) {
    refused(
        Reason::NoAccess,
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
    turns: &mut StreamState,
    item: &ItemState,
) -> (ItemOutcome, bool) {
    let id = &item.conversation_id;
    let current = item.current_assignee.clone();
    match action {
        BulkAction::Unassign => match current {
            None => (ItemOutcome::Unchanged { assignee: None }, false),
            Some(holder) if actor.role == Role::Organizer && holder != actor.user_id => refused(
                Reason::OrganizerUnassignsOwnOnly,
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
            Some(holder) => refused(
                Reason::AlreadyAssigned,
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
                Reason::AlreadyAssigned,
                format!("{id:?} is already assigned to {holder:?}; use BulkReassign to move it"),
            ),
            None => {
                let target = turns.next_target(targets);
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
                Reason::NotAssigned,
                format!("{id:?} is not assigned to anyone; use BulkAssign"),
            ),
            Some(holder) => {
                let target = turns.next_target(targets);
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

mod targets;
#[cfg(test)]
mod tests;

pub use targets::{BulkOptions, resolve_targets};
