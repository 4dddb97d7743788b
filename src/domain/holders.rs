//! Unreachable holders: a conversation held by someone who can no longer answer it. A holder is
//! unreachable when deactivated or when no access group lets them reply to it any more (admins always may):
//! the campaign's [`OnUnreachableHolder`] says what happens, applied in the transaction that makes a holder
//! unreachable (DeactivateUser, an access group's change, a conversation's tags); the SQL form of that rule is
//! `store::rules::unreachable_cause`. A holder who is away, offline or off shift is not there to answer
//! ([`absent`]): the campaign's `on_unavailable` says what happens (`domain::auto_assign::OnUnavailable`).
//! Either way a member's message to such a conversation says so, and applies the policy again.

use crate::domain::auto_assign::OnUnavailable;
use crate::domain::model::{Availability, Role, UserRef};

/// Why a holder cannot answer the conversation they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unreachable {
    /// Deactivated.
    Inactive,
    /// No access group lets them reply to it.
    NoReplyAccess,
    /// Away or offline.
    Unavailable,
    /// Off shift by their schedule.
    OffShift,
}

impl Unreachable {
    /// The cause history records when it takes the conversation from them.
    pub fn cause(self) -> &'static str {
        match self {
            Unreachable::Inactive => "HOLDER_INACTIVE",
            Unreachable::NoReplyAccess => "HOLDER_NO_REPLY_ACCESS",
            Unreachable::Unavailable => "HOLDER_UNAVAILABLE",
            Unreachable::OffShift => "HOLDER_OFF_SHIFT",
        }
    }

    /// The campaign setting that decides what becomes of the conversation.
    pub fn policy(self) -> &'static str {
        match self {
            Unreachable::Inactive | Unreachable::NoReplyAccess => "on_unreachable_holder",
            Unreachable::Unavailable | Unreachable::OffShift => "on_unavailable",
        }
    }

    /// Whether the campaign's settings return the conversation to the queue for this.
    pub fn returns(
        self,
        on_unreachable: OnUnreachableHolder,
        on_unavailable: OnUnavailable,
    ) -> bool {
        match self {
            Unreachable::Inactive | Unreachable::NoReplyAccess => {
                on_unreachable == OnUnreachableHolder::ReturnToQueue
            }
            Unreachable::Unavailable | Unreachable::OffShift => {
                on_unavailable == OnUnavailable::ReturnToQueue
            }
        }
    }

    /// The cause as the store spells it, back.
    pub fn from_cause(cause: &str) -> Option<Self> {
        match cause {
            "HOLDER_INACTIVE" => Some(Unreachable::Inactive),
            "HOLDER_NO_REPLY_ACCESS" => Some(Unreachable::NoReplyAccess),
            _ => None,
        }
    }

    /// A sentence for a person.
    pub fn message(self, holder: &str) -> String {
        match self {
            Unreachable::Inactive => format!("{holder} is deactivated and cannot reply"),
            Unreachable::NoReplyAccess => {
                format!("no access group lets {holder} reply to it any more")
            }
            Unreachable::Unavailable => format!("{holder} is away or offline"),
            Unreachable::OffShift => format!("{holder} is off shift"),
        }
    }
}

/// Whether an organizer holding the conversation is there to answer it: `AVAILABLE` and on shift. `None`
/// when they are. (Admins' availability does not route, and going away returns only organizers'
/// conversations.)
pub fn absent(availability: Availability, on_shift: bool) -> Option<Unreachable> {
    if availability != Availability::Available {
        Some(Unreachable::Unavailable)
    } else if !on_shift {
        Some(Unreachable::OffShift)
    } else {
        None
    }
}

/// Whether `holder` can answer a conversation they hold; `has_reply_access`: an access group lets them reply
/// to it.
pub fn unreachable(holder: &UserRef, has_reply_access: bool) -> Option<Unreachable> {
    if !holder.active {
        Some(Unreachable::Inactive)
    } else if holder.role == Role::Admin || has_reply_access {
        None
    } else {
        Some(Unreachable::NoReplyAccess)
    }
}

/// What happens to a conversation whose holder becomes unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnUnreachableHolder {
    /// It is unassigned and put at the front of the waiting queue (the default): with auto-assignment on,
    /// routing gives it at once to the next eligible organizer; otherwise it waits there.
    #[default]
    ReturnToQueue,
    /// The holder keeps it; ListConversations' `held_by_unreachable` filter and the preview find it.
    Keep,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::user;

    #[test]
    fn a_holder_is_unreachable_when_deactivated_or_without_reply_access() {
        let organizer = user("o1", Role::Organizer, true);
        assert_eq!(unreachable(&organizer, true), None);
        assert_eq!(
            unreachable(&organizer, false),
            Some(Unreachable::NoReplyAccess)
        );
        let gone = user("o1", Role::Organizer, false);
        assert_eq!(unreachable(&gone, true), Some(Unreachable::Inactive));
        // Admins reply to anything; a deactivated admin cannot.
        assert_eq!(unreachable(&user("a", Role::Admin, true), false), None);
        assert_eq!(
            unreachable(&user("a", Role::Admin, false), false),
            Some(Unreachable::Inactive)
        );
        for why in [Unreachable::Inactive, Unreachable::NoReplyAccess] {
            assert_eq!(Unreachable::from_cause(why.cause()), Some(why));
        }
    }

    #[test]
    fn a_holder_away_offline_or_off_shift_is_absent_and_on_unavailable_decides() {
        assert_eq!(absent(Availability::Available, true), None);
        assert_eq!(
            absent(Availability::Away, true),
            Some(Unreachable::Unavailable)
        );
        assert_eq!(
            absent(Availability::Offline, false),
            Some(Unreachable::Unavailable)
        );
        assert_eq!(
            absent(Availability::Available, false),
            Some(Unreachable::OffShift)
        );
        use OnUnavailable as U;
        use OnUnreachableHolder as H;
        assert!(Unreachable::OffShift.returns(H::Keep, U::ReturnToQueue));
        assert!(!Unreachable::OffShift.returns(H::ReturnToQueue, U::Keep));
        assert!(Unreachable::Inactive.returns(H::ReturnToQueue, U::Keep));
        assert!(!Unreachable::Inactive.returns(H::Keep, U::ReturnToQueue));
        assert_eq!(Unreachable::Unavailable.policy(), "on_unavailable");
    }
}
