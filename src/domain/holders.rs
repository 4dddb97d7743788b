//! Unreachable holders: a conversation held by someone who can no longer answer it. A holder is
//! unreachable when deactivated or when no access group lets them reply to it any more (admins always may);
//! away and offline holders are the `on_unavailable` setting's (`domain::auto_assign::OnUnavailable`). The
//! campaign's [`OnUnreachableHolder`] says what happens, applied in the transaction that makes a holder
//! unreachable (DeactivateUser, an access group's change, a conversation's tags). The SQL form of the rule is
//! `store::rules::unreachable_cause`.

use crate::domain::model::{Role, UserRef};

/// Why a holder cannot answer the conversation they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unreachable {
    /// Deactivated.
    Inactive,
    /// No access group lets them reply to it.
    NoReplyAccess,
}

impl Unreachable {
    /// The cause history records when it takes the conversation from them.
    pub fn cause(self) -> &'static str {
        match self {
            Unreachable::Inactive => "HOLDER_INACTIVE",
            Unreachable::NoReplyAccess => "HOLDER_NO_REPLY_ACCESS",
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
        }
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
}
