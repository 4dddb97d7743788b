//! What must follow a committed change on the replica that made it: draining the campaign's waiting queue
//! (the change may let someone take a waiting conversation) and running the feed's sequencer (the change
//! wrote history). Decided here, once, by the kind of change; use cases report their change after it
//! succeeded (`service::AfterCommit`). A replica that dies in between leaves both to the periodic sweeps.

use crate::domain::assignment::AssigneeRequest;
use crate::domain::bulk::BulkAction;
use crate::domain::model::ConversationStatus;

/// A change a use case made, by what it may set off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// AssignConversation, BulkAssign.
    Assigned,
    /// UnassignConversation, BulkUnassign.
    Unassigned,
    /// ReassignConversation, BulkReassign.
    Reassigned,
    Resolved,
    Reopened,
    /// SetAvailability, to any availability.
    AvailabilitySet,
    /// SetCapacity, set or cleared.
    CapacitySet,
    /// UpdateInboxSettings, any field.
    SettingsUpdated,
    AccessGroupCreated,
    AccessGroupUpdated,
    AccessGroupDeleted,
    OrganizersAdded,
    OrganizersRemoved,
    /// UpsertUser: a user synced in (created, changed or reactivated).
    UserSynced,
    UserDeactivated,
    /// UpsertConversation: a conversation synced in (created, or its member's tags changed).
    ConversationSynced,
    /// RecordReply: a member's wait ended.
    ReplyRecorded,
    /// Silence timers fired: holders who let replies lapse lost them to the queue, or were flagged.
    RepliesOverdue,
    /// Conversations whose holder can no longer answer them went back to the queue (declared beside the
    /// change that made the holder unreachable: a deactivation, an access group's change, new tags).
    UnreachableReturned,
    /// A shift schedule set or deleted, or shift boundaries passed: shifts started or ended (recorded in
    /// history), an ended shift's conversations returned to the queue.
    ShiftsChanged,
}

impl From<AssigneeRequest<'_>> for Change {
    fn from(request: AssigneeRequest<'_>) -> Self {
        match request {
            AssigneeRequest::Assign { .. } => Change::Assigned,
            AssigneeRequest::Unassign | AssigneeRequest::Release => Change::Unassigned,
            AssigneeRequest::Reassign { .. } => Change::Reassigned,
        }
    }
}

impl From<BulkAction> for Change {
    fn from(action: BulkAction) -> Self {
        match action {
            BulkAction::Assign => Change::Assigned,
            BulkAction::Unassign => Change::Unassigned,
            BulkAction::Reassign => Change::Reassigned,
        }
    }
}

impl Change {
    /// ResolveConversation (`Resolved`) or ReopenConversation (`Open`).
    pub fn status(wanted: ConversationStatus) -> Self {
        match wanted {
            ConversationStatus::Resolved => Change::Resolved,
            ConversationStatus::Open => Change::Reopened,
        }
    }
}

/// What follows a change's commit, for its campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// Drain the campaign's waiting queue now (not only at the next sweep).
    pub drain_waiting: bool,
    /// Number the campaign's new events and fan them out (the feed's sequencer).
    pub wake_feed: bool,
}

/// Whether `change` may free an organizer to take a waiting conversation (or make one takable): the
/// one rule for which changes drain the waiting queue at once.
pub fn may_free_organizer(change: Change) -> bool {
    match change {
        // Room on the one who held it (a reassign frees the previous holder).
        Change::Unassigned | Change::Reassigned | Change::Resolved => true,
        // Becoming AVAILABLE adds a candidate; going away with RETURN_TO_QUEUE queues conversations for
        // others. A capacity or settings change may raise a limit, switch auto-assignment on or change
        // routing.
        Change::AvailabilitySet | Change::CapacitySet | Change::SettingsUpdated => true,
        // A group may grant reply on waiting conversations (eligibility needs it).
        Change::AccessGroupCreated | Change::AccessGroupUpdated | Change::OrganizersAdded => true,
        // A user back or new, a conversation's tags changed: candidates or eligibility may change.
        Change::UserSynced | Change::ConversationSynced => true,
        // Lapsed conversations, or an unreachable holder's, wait at the front of the queue for the next
        // organizer.
        Change::RepliesOverdue | Change::UnreachableReturned => true,
        // A shift start adds a candidate; a shift end may return conversations to the queue.
        Change::ShiftsChanged => true,
        // These only take room or permissions away.
        Change::Assigned
        | Change::Reopened
        | Change::AccessGroupDeleted
        | Change::OrganizersRemoved
        | Change::UserDeactivated
        | Change::ReplyRecorded => false,
    }
}

/// Whether `change` writes history (`assignment_events`), which the feed must number and fan out.
pub fn writes_history(change: Change) -> bool {
    match change {
        Change::Assigned
        | Change::Unassigned
        | Change::Reassigned
        | Change::Resolved
        | Change::Reopened
        // The availability event, and RETURN_TO_QUEUE's unassignments.
        | Change::AvailabilitySet
        // UNASSIGN and QUEUED, or REPLY_OVERDUE.
        | Change::RepliesOverdue
        | Change::UnreachableReturned
        // SHIFT_STARTED or SHIFT_ENDED, and a shift end's returns.
        | Change::ShiftsChanged => true,
        Change::CapacitySet
        | Change::SettingsUpdated
        | Change::AccessGroupCreated
        | Change::AccessGroupUpdated
        | Change::AccessGroupDeleted
        | Change::OrganizersAdded
        | Change::OrganizersRemoved
        | Change::UserSynced
        | Change::UserDeactivated
        | Change::ConversationSynced
        // A reply is not assignment history.
        | Change::ReplyRecorded => false,
    }
}

/// Everything that follows `change`'s commit.
pub fn after_commit(change: Change) -> Effects {
    Effects {
        drain_waiting: may_free_organizer(change),
        wake_feed: writes_history(change),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every change, with whether it drains the waiting queue and whether it wakes the feed.
    const TABLE: [(Change, bool, bool); 20] = [
        (Change::Assigned, false, true),
        (Change::Unassigned, true, true),
        (Change::Reassigned, true, true),
        (Change::Resolved, true, true),
        (Change::Reopened, false, true),
        (Change::AvailabilitySet, true, true),
        (Change::CapacitySet, true, false),
        (Change::SettingsUpdated, true, false),
        (Change::AccessGroupCreated, true, false),
        (Change::AccessGroupUpdated, true, false),
        (Change::AccessGroupDeleted, false, false),
        (Change::OrganizersAdded, true, false),
        (Change::OrganizersRemoved, false, false),
        (Change::UserSynced, true, false),
        (Change::UserDeactivated, false, false),
        (Change::ConversationSynced, true, false),
        (Change::ReplyRecorded, false, false),
        (Change::RepliesOverdue, true, true),
        (Change::UnreachableReturned, true, true),
        (Change::ShiftsChanged, true, true),
    ];

    #[test]
    fn changes_that_may_free_an_organizer_drain_and_those_that_write_history_wake_the_feed() {
        for (change, drain_waiting, wake_feed) in TABLE {
            let expected = Effects {
                drain_waiting,
                wake_feed,
            };
            assert_eq!(after_commit(change), expected, "{change:?}");
        }
    }

    #[test]
    fn single_and_bulk_changes_of_the_assignee_have_the_same_effects() {
        let pairs = [
            (AssigneeRequest::Assign { to: "u" }, BulkAction::Assign),
            (AssigneeRequest::Unassign, BulkAction::Unassign),
            (AssigneeRequest::Reassign { to: "u" }, BulkAction::Reassign),
        ];
        for (single, bulk) in pairs {
            assert_eq!(Change::from(single), Change::from(bulk));
        }
        assert!(!may_free_organizer(Change::from(BulkAction::Assign)));
        assert!(may_free_organizer(Change::from(BulkAction::Unassign)));
    }

    #[test]
    fn a_resolve_frees_its_holder_and_a_reopen_does_not() {
        assert!(may_free_organizer(Change::status(
            ConversationStatus::Resolved
        )));
        assert!(!may_free_organizer(Change::status(
            ConversationStatus::Open
        )));
    }
}
