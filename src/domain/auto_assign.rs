//! Auto-assignment as pure decisions: who is next round-robin, and what a batch of triggers does.

mod priority;
mod routing;

pub use priority::{DEFAULT_PRIORITY_STEP_SECONDS, Priority, effective_arrival};
pub use routing::{
    Candidate, Ineligible, Load, OnUnavailable, RotationStart, Routing, RoutingMode,
    effective_capacity,
};

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::holders::{OnUnreachableHolder, Unreachable};
use super::model::{Availability, Conversation, ConversationStatus};
use super::replies::{OnReplyOverdue, ReplySettings, routable};

/// A campaign's inbox settings: whether auto-assignment is on, and how it routes.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxSettings {
    pub auto_assign_enabled: bool,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
    /// The most open conversations an organizer without their own capacity is given; 0 = unlimited.
    pub default_capacity: i32,
    pub routing_mode: RoutingMode,
    pub rotation_start: RotationStart,
    pub on_unavailable: OnUnavailable,
    #[sqlx(flatten)]
    pub replies: ReplySettings,
    /// How many seconds of waiting one priority level is worth in the queue.
    pub priority_step_seconds: i32,
    pub on_unreachable_holder: OnUnreachableHolder,
    /// The IANA time zone shift schedules are read in.
    pub time_zone: String,
}

/// A conversation in the waiting queue.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WaitingConversation {
    #[sqlx(flatten)]
    pub conversation: crate::domain::model::Conversation,
    /// Its place among the waiting conversations the viewer may see: 1 = the first of them to be assigned.
    pub rank: i64,
    /// Its queue key (`store::rules::queue_key`: its effective arrival on the campaign's queue clock; never
    /// shown, page tokens carry it opaque; negative for conversations returned to the front).
    pub position: i64,
    pub waiting_since: DateTime<Utc>,
    pub priority: Priority,
}

/// The settings an admin changes; `None` keeps a value.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    pub auto_assign_enabled: Option<bool>,
    pub default_capacity: Option<i32>,
    pub routing_mode: Option<RoutingMode>,
    pub rotation_start: Option<RotationStart>,
    pub on_unavailable: Option<OnUnavailable>,
    /// `Some(None)` switches the silence timer off.
    pub reply_within_seconds: Option<Option<i32>>,
    pub on_reply_overdue: Option<OnReplyOverdue>,
    pub max_overdue_reassignments: Option<i32>,
    pub priority_step_seconds: Option<i32>,
    pub on_unreachable_holder: Option<OnUnreachableHolder>,
    /// An IANA time zone name.
    pub time_zone: Option<String>,
}

impl SettingsChange {
    /// Whether it sets no field.
    pub fn is_empty(&self) -> bool {
        let SettingsChange {
            auto_assign_enabled,
            default_capacity,
            routing_mode,
            rotation_start,
            on_unavailable,
            reply_within_seconds,
            on_reply_overdue,
            max_overdue_reassignments,
            priority_step_seconds,
            on_unreachable_holder,
            time_zone,
        } = self;
        auto_assign_enabled.is_none()
            && default_capacity.is_none()
            && routing_mode.is_none()
            && rotation_start.is_none()
            && on_unavailable.is_none()
            && reply_within_seconds.is_none()
            && on_reply_overdue.is_none()
            && max_overdue_reassignments.is_none()
            && priority_step_seconds.is_none()
            && on_unreachable_holder.is_none()
            && time_zone.is_none()
    }
}

/// One inbound-message trigger, validated. Member data, when given, creates a conversation this service
/// has not seen.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub trigger_id: String,
    pub conversation_id: String,
    pub member_id: Option<String>,
    pub member_tags: Vec<String>,
    /// The request id of the call, recorded on the history event.
    pub request_id: Option<String>,
    /// Where it queues if nobody can take it.
    pub priority: Priority,
}

/// The organizer after `last` in id order, wrapping around; `None` when nobody is eligible.
///
/// `eligible` must be sorted by id. Comparing ids (not positions) keeps the rotation's place when organizers
/// join, leave or are skipped as ineligible, and when `last` names a user who no longer exists.
pub fn next_organizer<'a>(eligible: &'a [String], last: Option<&str>) -> Option<&'a str> {
    let after_last = last.and_then(|last| eligible.iter().find(|id| id.as_str() > last));
    after_last.or(eligible.first()).map(String::as_str)
}

/// What an auto-assign trigger did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoOutcome {
    /// Assigned to this organizer now.
    Assigned(String),
    /// Already assigned to this user; nothing changed.
    AlreadyAssigned(String),
    /// Nobody could take it (recorded by versions without a waiting queue).
    NoEligibleOrganizer,
    /// Auto-assignment is switched off for the campaign.
    Disabled,
    /// Nobody can take it now: it waits in the campaign's queue until someone can.
    Queued,
}

/// How an outcome is stored in a trigger record (with the assignee beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutcomeKind {
    Assigned,
    AlreadyAssigned,
    NoEligibleOrganizer,
    Disabled,
    Queued,
}

impl AutoOutcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            AutoOutcome::Assigned(_) => OutcomeKind::Assigned,
            AutoOutcome::AlreadyAssigned(_) => OutcomeKind::AlreadyAssigned,
            AutoOutcome::NoEligibleOrganizer => OutcomeKind::NoEligibleOrganizer,
            AutoOutcome::Disabled => OutcomeKind::Disabled,
            AutoOutcome::Queued => OutcomeKind::Queued,
        }
    }

    /// Rebuilds a recorded outcome; `None` when the record is inconsistent (an assignment without assignee).
    pub fn from_record(kind: OutcomeKind, assignee: Option<String>) -> Option<Self> {
        match (kind, assignee) {
            (OutcomeKind::Assigned, Some(user)) => Some(AutoOutcome::Assigned(user)),
            (OutcomeKind::AlreadyAssigned, Some(user)) => Some(AutoOutcome::AlreadyAssigned(user)),
            (OutcomeKind::Assigned | OutcomeKind::AlreadyAssigned, None) => None,
            (OutcomeKind::NoEligibleOrganizer, _) => Some(AutoOutcome::NoEligibleOrganizer),
            (OutcomeKind::Disabled, _) => Some(AutoOutcome::Disabled),
            (OutcomeKind::Queued, _) => Some(AutoOutcome::Queued),
        }
    }

    /// A sentence for a person reading a flow's run history.
    pub fn message(&self) -> String {
        match self {
            AutoOutcome::Assigned(user) => format!("Assigned to {user}, next in the round-robin."),
            AutoOutcome::AlreadyAssigned(user) => format!("Already assigned to {user}; nothing changed."),
            AutoOutcome::NoEligibleOrganizer => "No active organizer can reply to this conversation through an \
                access group, so it stays unassigned: add organizers to an access group that covers it."
                .into(),
            AutoOutcome::Disabled => "Auto-assignment is off for this campaign, so nothing changed: an admin can \
                switch it on with UpdateInboxSettings."
                .into(),
            AutoOutcome::Queued => "No available organizer with room can reply to this conversation now, so it \
                waits in the campaign's queue: it is assigned the moment someone can take it (ListWaitingConversations \
                shows the queue; PreviewAutoAssign says why each organizer cannot)."
                .into(),
        }
    }

    pub fn assignee(&self) -> Option<&str> {
        match self {
            AutoOutcome::Assigned(user) | AutoOutcome::AlreadyAssigned(user) => Some(user),
            _ => None,
        }
    }
}

/// One trigger of a batch (or a waiting conversation being drained), with the state read under the
/// campaign's auto-assign lock.
#[derive(Debug, Clone)]
pub struct TriggerState {
    /// `None` for a waiting conversation: it is routed again, not delivered.
    pub trigger_id: Option<String>,
    pub conversation_id: String,
    pub current_assignee: Option<String>,
    /// What this trigger id's first delivery was for and did, if it was delivered before.
    pub recorded: Option<RecordedTrigger>,
    /// Organizers who may take the conversation but for their load: active, available, and an access group
    /// lets them reply to it. Sorted by id.
    pub eligible: Vec<String>,
    /// Organizers who let the conversation's current wait lapse: never routed it again until it is answered.
    pub lapsed_by: Vec<String>,
    /// Why its current holder cannot answer it, if they cannot (`domain::holders`).
    pub holder_unreachable: Option<Unreachable>,
    /// Its current holder's availability (whether they are there to answer: `domain::holders::absent`).
    pub holder_availability: Option<Availability>,
}

/// Whether a drain places a conversation it read in the waiting queue, judged on its row as locked (the
/// newest version): it still waits (its queue row was still there once the row was locked), is open and
/// unassigned. A change that committed after the drain read the queue (a resolve, an assignment, a resolve
/// and a reopen) has taken it out of the queue.
pub fn still_waits(queue_row_found: bool, conversation: &Conversation) -> bool {
    queue_row_found
        && conversation.status == ConversationStatus::Open
        && conversation.assignee_id.is_none()
}

/// A trigger id's first delivery, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTrigger {
    pub conversation_id: String,
    pub outcome: AutoOutcome,
}

/// What becomes of one trigger of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Decided(Decision),
    /// The trigger id was first delivered for another conversation: a caller's mistake, nothing is done.
    TriggerReused {
        first_conversation: String,
    },
}

/// The decision for one trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: AutoOutcome,
    /// A redelivery: it repeats the first delivery's outcome and writes nothing.
    pub duplicate: bool,
}

impl Decision {
    /// Whether this decision assigns the conversation now.
    pub fn assigns(&self) -> Option<&str> {
        match (&self.outcome, self.duplicate) {
            (AutoOutcome::Assigned(user), false) => Some(user),
            _ => None,
        }
    }
}

impl Verdict {
    /// Whether this verdict assigns the conversation now.
    pub fn assigns(&self) -> Option<&str> {
        match self {
            Verdict::Decided(decision) => decision.assigns(),
            Verdict::TriggerReused { .. } => None,
        }
    }
}

/// A batch as planned: each entry with its verdict, in the order given, and where the round-robin cursor
/// ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan<E> {
    pub entries: Vec<Planned<E>>,
    pub cursor: Option<String>,
}

/// One entry of a batch (whatever the caller carries beside its [`TriggerState`]) and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned<E> {
    pub entry: E,
    pub verdict: Verdict,
}

impl<E> BatchPlan<E> {
    /// The verdicts, in order.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.entries.iter().map(|p| p.verdict.clone()).collect()
    }

    /// Whether some entry's answer is "queued" (a redelivery's too).
    pub fn any_queued(&self) -> bool {
        self.entries.iter().any(|p| p.verdict.is_queued())
    }
}

impl Verdict {
    /// Whether the answer is "queued" (a redelivery's too).
    pub fn is_queued(&self) -> bool {
        matches!(self, Verdict::Decided(d) if d.outcome == AutoOutcome::Queued)
    }
}

/// Decides a batch (waiting conversations being drained first, in queue order, then the new triggers) as
/// if its triggers had arrived one at a time: a conversation nobody can take is queued; each assignment
/// moves the cursor (and adds to the winner's load), a conversation assigned earlier in the batch counts as
/// assigned, a trigger id seen before (in the database or earlier in the batch) for the same conversation
/// repeats its first outcome, and one seen for another conversation is refused.
pub fn plan_batch<E: std::borrow::Borrow<TriggerState>>(
    enabled: bool,
    cursor: Option<&str>,
    mut routing: Routing,
    entries: impl IntoIterator<Item = E>,
) -> BatchPlan<E> {
    let mut cursor = cursor.map(str::to_owned);
    let mut holders: HashMap<String, String> = HashMap::new();
    let mut seen: HashMap<String, RecordedTrigger> = HashMap::new();
    let mut planned = Vec::new();
    for entry in entries {
        let trigger: &TriggerState = entry.borrow();
        let earlier = trigger.trigger_id.as_deref().and_then(|id| seen.get(id));
        let verdict = if let Some(first) = trigger.recorded.as_ref().or(earlier) {
            if first.conversation_id == trigger.conversation_id {
                Verdict::Decided(Decision {
                    outcome: first.outcome.clone(),
                    duplicate: true,
                })
            } else {
                Verdict::TriggerReused {
                    first_conversation: first.conversation_id.clone(),
                }
            }
        } else {
            let holder = holders
                .get(&trigger.conversation_id)
                .cloned()
                .or_else(|| trigger.current_assignee.clone());
            let outcome = match holder {
                Some(holder) => AutoOutcome::AlreadyAssigned(holder),
                None if !enabled => AutoOutcome::Disabled,
                None => match routing.pick(
                    &routable(trigger.eligible.clone(), &trigger.lapsed_by),
                    cursor.as_deref(),
                ) {
                    Some(next) => {
                        cursor = Some(next.to_owned());
                        holders.insert(trigger.conversation_id.clone(), next.to_owned());
                        AutoOutcome::Assigned(next.to_owned())
                    }
                    None => AutoOutcome::Queued,
                },
            };
            if let Some(trigger_id) = &trigger.trigger_id {
                let first = RecordedTrigger {
                    conversation_id: trigger.conversation_id.clone(),
                    outcome: outcome.clone(),
                };
                seen.insert(trigger_id.clone(), first);
            }
            Verdict::Decided(Decision {
                outcome,
                duplicate: false,
            })
        };
        planned.push(Planned { entry, verdict });
    }
    BatchPlan {
        entries: planned,
        cursor,
    }
}

#[cfg(test)]
mod tests;
