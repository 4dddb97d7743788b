//! Replies and silence timers: who may report a reply, what a retried report does, and what becomes of a
//! conversation whose holder did not reply in time.
//!
//! A member's message starts a wait (`awaiting_reply_since`, kept by the first unanswered message); a reply
//! ends it. While a campaign sets `reply_within_seconds`, the holder's reply is due that long after the
//! later of the wait's start and the assignment (the one definition is SQL's, `store::rules::reply_due`,
//! since the database finds what is due). When it lapses, the holder is recorded in `lapsed_by` and the
//! campaign's [`OnReplyOverdue`] applies; routing never gives the conversation back to an organizer who let
//! this wait lapse ([`routable`]).

use chrono::{DateTime, Utc};

use crate::domain::access::ReplyDecision;
use crate::domain::model::{Conversation, ConversationStatus};
use crate::error::{AppError, Reason};

/// What happens when a holder has not replied in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnReplyOverdue {
    /// The conversation goes to the front of the waiting queue, from which routing gives it at once to the
    /// next eligible organizer who has not let this wait lapse (the default). After
    /// `max_overdue_reassignments` reroutes of one wait, the last one stops timing it.
    #[default]
    Reassign,
    /// The holder keeps it; a REPLY_OVERDUE event says so (once per holder and wait).
    Notify,
}

/// A campaign's silence-timer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ReplySettings {
    /// Reply within this many seconds; `None`: no timer (the default).
    pub reply_within_seconds: Option<i32>,
    pub on_reply_overdue: OnReplyOverdue,
    /// How many times one wait is rerouted before its next holder is no longer timed (default 2).
    pub max_overdue_reassignments: i32,
}

impl Default for ReplySettings {
    fn default() -> Self {
        ReplySettings {
            reply_within_seconds: None,
            on_reply_overdue: OnReplyOverdue::default(),
            max_overdue_reassignments: 2,
        }
    }
}

/// When the holder of `conversation` must reply, under `settings`; `None` when no timer runs. The Rust form
/// of `store::rules::reply_due` (the one the database fires by), for the auto-assign batch, which holds its
/// campaign's settings: `tests/integration/store_rules.rs` checks the two agree.
pub fn reply_due_at(
    conversation: &Conversation,
    settings: &ReplySettings,
) -> Option<DateTime<Utc>> {
    let since = conversation.awaiting_reply_since?;
    let holder = conversation.assignee_id.as_ref()?;
    let assigned_at = conversation.assigned_at?;
    let within = settings.reply_within_seconds?;
    let timed =
        conversation.status == ConversationStatus::Open && !conversation.lapsed_by.contains(holder);
    timed.then(|| since.max(assigned_at) + chrono::Duration::seconds(i64::from(within)))
}

/// What a lapse does to a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lapse {
    /// Back to the front of the queue, to be routed at once to someone who has not let this wait lapse.
    Reroute,
    /// The same, but the wait is no longer timed: it was rerouted `max_overdue_reassignments` times.
    RerouteUntimed,
    /// The holder keeps it; the lapse is only recorded.
    Notify,
}

impl Lapse {
    /// Its metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Lapse::Reroute => "reassign",
            Lapse::RerouteUntimed => "reassign_untimed",
            Lapse::Notify => "notify",
        }
    }
}

/// What the campaign's settings do with a holder's lapse, `lapses_before` holders having let the same wait
/// lapse already.
pub fn on_lapse(settings: &ReplySettings, lapses_before: i32) -> Lapse {
    match settings.on_reply_overdue {
        OnReplyOverdue::Notify => Lapse::Notify,
        OnReplyOverdue::Reassign if lapses_before < settings.max_overdue_reassignments => {
            Lapse::Reroute
        }
        OnReplyOverdue::Reassign => Lapse::RerouteUntimed,
    }
}

/// The organizers a conversation may be routed to: the eligible ones but those who let its current wait
/// lapse. Keeps `eligible`'s order.
pub fn routable(eligible: Vec<String>, lapsed_by: &[String]) -> Vec<String> {
    if lapsed_by.is_empty() {
        return eligible;
    }
    eligible
        .into_iter()
        .filter(|id| !lapsed_by.contains(id))
        .collect()
}

/// One reply the messaging service reports, validated.
#[derive(Debug, Clone)]
pub struct Reply {
    pub message_id: String,
    pub conversation_id: String,
    pub sender_id: String,
}

/// A message id's first report, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedReply {
    pub conversation_id: String,
    pub sender_id: String,
}

/// What a reply report does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyPlan {
    /// A new reply: it ends the member's wait.
    Record,
    /// The same message reported again: nothing is written.
    Repeat,
}

/// Decides a reply report: a message id reported before for the same conversation and sender repeats (and
/// is answered as the first was), one reported for another conversation or sender is refused, and a new
/// reply is refused unless its sender may reply now (the help article's grey Send button).
pub fn plan_reply(
    reply: &Reply,
    recorded: Option<&RecordedReply>,
    permission: ReplyDecision,
    assignee: Option<&str>,
) -> Result<ReplyPlan, AppError> {
    if let Some(first) = recorded {
        if first.conversation_id == reply.conversation_id && first.sender_id == reply.sender_id {
            return Ok(ReplyPlan::Repeat);
        }
        return Err(AppError::new(
            Reason::MessageIdReused,
            format!(
                "message_id {:?} was first reported for conversation {:?} by {:?}; give each message its \
                 own id",
                reply.message_id, first.conversation_id, first.sender_id
            ),
        ));
    }
    if !permission.allowed() {
        return Err(AppError::new(
            Reason::ReplyNotAllowed,
            format!(
                "{:?} may not reply to conversation {:?}: {}",
                reply.sender_id,
                reply.conversation_id,
                permission.message(assignee)
            ),
        ));
    }
    Ok(ReplyPlan::Record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> Reply {
        Reply {
            message_id: "m1".into(),
            conversation_id: "c1".into(),
            sender_id: "o1".into(),
        }
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn routing_skips_who_let_the_wait_lapse_and_keeps_the_order() {
        assert_eq!(
            routable(ids(&["a", "b", "c"]), &ids(&["b"])),
            ids(&["a", "c"])
        );
        assert_eq!(routable(ids(&["a", "b"]), &[]), ids(&["a", "b"]));
        assert!(routable(ids(&["a"]), &ids(&["a"])).is_empty());
    }

    #[test]
    fn a_wait_is_rerouted_at_most_n_times_then_no_longer_timed() {
        let settings = ReplySettings {
            reply_within_seconds: Some(60),
            ..ReplySettings::default()
        };
        assert_eq!(settings.max_overdue_reassignments, 2);
        assert_eq!(on_lapse(&settings, 0), Lapse::Reroute);
        assert_eq!(on_lapse(&settings, 1), Lapse::Reroute);
        assert_eq!(on_lapse(&settings, 2), Lapse::RerouteUntimed);
        let never = ReplySettings {
            max_overdue_reassignments: 0,
            ..settings
        };
        assert_eq!(on_lapse(&never, 0), Lapse::RerouteUntimed);
        let notify = ReplySettings {
            on_reply_overdue: OnReplyOverdue::Notify,
            ..settings
        };
        assert_eq!(on_lapse(&notify, 5), Lapse::Notify);
    }

    #[test]
    fn a_new_reply_needs_permission_to_reply() {
        assert_eq!(
            plan_reply(&reply(), None, ReplyDecision::AssignedToUser, Some("o1")).unwrap(),
            ReplyPlan::Record
        );
        assert_eq!(
            plan_reply(&reply(), None, ReplyDecision::Admin, Some("o2")).unwrap(),
            ReplyPlan::Record
        );
        let refused =
            plan_reply(&reply(), None, ReplyDecision::AssignedToOther, Some("o2")).unwrap_err();
        assert_eq!(refused.reason(), Some(Reason::ReplyNotAllowed));
        assert!(refused.to_string().contains("assigned to o2"), "{refused}");
    }

    #[test]
    fn a_repeated_message_id_repeats_or_is_refused() {
        let first = RecordedReply {
            conversation_id: "c1".into(),
            sender_id: "o1".into(),
        };
        // Repeated even if the sender may no longer reply: the first report was allowed.
        assert_eq!(
            plan_reply(&reply(), Some(&first), ReplyDecision::NotAssigned, None).unwrap(),
            ReplyPlan::Repeat
        );
        let other = RecordedReply {
            conversation_id: "c2".into(),
            ..first
        };
        let refused =
            plan_reply(&reply(), Some(&other), ReplyDecision::AssignedToUser, None).unwrap_err();
        assert_eq!(refused.reason(), Some(Reason::MessageIdReused));
    }
}
