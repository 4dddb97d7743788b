//! Who may see and who may reply to a conversation: the one place each is decided.
//!
//! "May view" is one rule for every RPC: an active admin sees every conversation; an active organizer sees
//! the conversations an access group lets them view, and the ones assigned to them. Replying is the help
//! article's "grey Send button": admins always; an organizer only to a conversation assigned to them and
//! covered by an access group that grants reply.

use crate::domain::model::{Role, UserRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyDecision {
    Admin,
    AssignedToUser,
    NotAssigned,
    AssignedToOther,
    NoReplyAccess,
    UserInactive,
}

impl ReplyDecision {
    pub fn allowed(self) -> bool {
        matches!(self, ReplyDecision::Admin | ReplyDecision::AssignedToUser)
    }

    /// A sentence for the person looking at the grey Send button.
    pub fn message(self, assignee: Option<&str>) -> String {
        match self {
            ReplyDecision::Admin => "Admins can reply to any conversation.".into(),
            ReplyDecision::AssignedToUser => "You are assigned to this conversation.".into(),
            ReplyDecision::NotAssigned => {
                "Nobody is assigned to this conversation: assign it to yourself to reply.".into()
            }
            ReplyDecision::AssignedToOther => format!(
                "This conversation is assigned to {}: only they or an admin can reply.",
                assignee.unwrap_or("someone else")
            ),
            ReplyDecision::NoReplyAccess => {
                "No access group gives you reply permission on this conversation: ask an admin."
                    .into()
            }
            ReplyDecision::UserInactive => "Inactive users cannot reply.".into(),
        }
    }
}

/// Admins may reply; an organizer only to a conversation assigned to them and covered by an access group
/// that grants reply.
pub fn reply_permission(
    user: &UserRef,
    assignee: Option<&str>,
    has_reply_access: bool,
) -> ReplyDecision {
    if !user.active {
        return ReplyDecision::UserInactive;
    }
    if user.role == Role::Admin {
        return ReplyDecision::Admin;
    }
    match assignee {
        None => ReplyDecision::NotAssigned,
        Some(holder) if holder != user.user_id => ReplyDecision::AssignedToOther,
        Some(_) if !has_reply_access => ReplyDecision::NoReplyAccess,
        Some(_) => ReplyDecision::AssignedToUser,
    }
}

/// What a user's access groups grant on one conversation, as the store read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupGrants {
    pub view: bool,
    pub reply: bool,
}

/// Whether `user` may see the conversation held by `assignee`: the one visibility rule.
pub fn may_view(user: &UserRef, assignee: Option<&str>, grants: GroupGrants) -> bool {
    user.active
        && (user.role == Role::Admin || grants.view || assignee == Some(user.user_id.as_str()))
}

/// Whether `user`'s role or access groups grant reply permission (whether they may reply right now also
/// depends on the assignment: see [`reply_permission`]).
pub fn has_reply_permission(user: &UserRef, grants: GroupGrants) -> bool {
    user.active && (user.role == Role::Admin || grants.reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, active: bool) -> UserRef {
        UserRef {
            user_id: "me".into(),
            role,
            active,
        }
    }

    #[test]
    fn admins_may_always_reply() {
        let admin = user(Role::Admin, true);
        for assignee in [None, Some("me"), Some("other")] {
            assert_eq!(
                reply_permission(&admin, assignee, false),
                ReplyDecision::Admin
            );
        }
        assert!(ReplyDecision::Admin.allowed());
    }

    #[test]
    fn organizers_reply_only_to_their_own_conversations_with_reply_access() {
        let org = user(Role::Organizer, true);
        let ok = reply_permission(&org, Some("me"), true);
        assert_eq!(ok, ReplyDecision::AssignedToUser);
        assert!(ok.allowed());
        assert_eq!(
            reply_permission(&org, None, true),
            ReplyDecision::NotAssigned
        );
        assert_eq!(
            reply_permission(&org, Some("other"), true),
            ReplyDecision::AssignedToOther
        );
        assert_eq!(
            reply_permission(&org, Some("me"), false),
            ReplyDecision::NoReplyAccess
        );
        for denied in [
            ReplyDecision::NotAssigned,
            ReplyDecision::AssignedToOther,
            ReplyDecision::NoReplyAccess,
            ReplyDecision::UserInactive,
        ] {
            assert!(!denied.allowed());
        }
    }

    #[test]
    fn inactive_users_may_not_reply() {
        assert_eq!(
            reply_permission(&user(Role::Admin, false), Some("me"), true),
            ReplyDecision::UserInactive
        );
    }

    #[test]
    fn messages_name_the_holder() {
        assert!(
            ReplyDecision::AssignedToOther
                .message(Some("Ana"))
                .contains("Ana")
        );
    }

    const NONE: GroupGrants = GroupGrants {
        view: false,
        reply: false,
    };
    const VIEW: GroupGrants = GroupGrants {
        view: true,
        reply: false,
    };

    #[test]
    fn admins_see_everything_organizers_what_a_group_covers_or_they_hold() {
        let org = user(Role::Organizer, true);
        assert!(may_view(&user(Role::Admin, true), None, NONE));
        assert!(may_view(&org, None, VIEW));
        assert!(may_view(&org, Some("me"), NONE));
        assert!(!may_view(&org, Some("other"), NONE));
        assert!(!may_view(&org, None, NONE));
    }

    #[test]
    fn inactive_users_see_nothing_and_may_not_reply() {
        assert!(!may_view(&user(Role::Admin, false), None, VIEW));
        assert!(!may_view(&user(Role::Organizer, false), Some("me"), VIEW));
        let all = GroupGrants {
            view: true,
            reply: true,
        };
        assert!(!has_reply_permission(&user(Role::Organizer, false), all));
        assert!(has_reply_permission(&user(Role::Organizer, true), all));
        assert!(!has_reply_permission(&user(Role::Organizer, true), VIEW));
        assert!(has_reply_permission(&user(Role::Admin, true), NONE));
    }
}
