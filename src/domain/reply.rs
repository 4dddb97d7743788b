//! Who may reply: the "grey Send button" of the help article.

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

/// Whether a user may see a conversation: admins all, organizers what a group lets them view or what they hold.
pub fn can_view(user: &UserRef, assignee: Option<&str>, has_view_access: bool) -> bool {
    user.role == Role::Admin || has_view_access || assignee == Some(user.user_id.as_str())
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

    #[test]
    fn visibility() {
        let org = user(Role::Organizer, true);
        assert!(can_view(&user(Role::Admin, true), None, false));
        assert!(can_view(&org, None, true));
        assert!(can_view(&org, Some("me"), false));
        assert!(!can_view(&org, Some("other"), false));
    }
}
