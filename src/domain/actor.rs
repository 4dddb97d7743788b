//! Who is acting: the role always comes from the directory, never from the caller.

use crate::domain::model::{Actor, UserRef};
use crate::error::{AppError, AppResult, Reason};

/// Turns the directory's view of the calling user into an actor, or refuses.
pub fn authenticate(campaign_id: &str, actor_id: &str, user: Option<UserRef>) -> AppResult<Actor> {
    match user {
        None => Err(AppError::new(
            Reason::ActorUnknown,
            format!(
                "x-actor-id {actor_id:?} is not a user of campaign {campaign_id:?}; \
                 sync the user with DirectoryService.UpsertUser first"
            ),
        )),
        Some(user) if !user.active => Err(AppError::new(
            Reason::ActorInactive,
            format!("user {actor_id:?} is inactive in campaign {campaign_id:?} and cannot act"),
        )),
        Some(user) => Ok(Actor {
            user_id: user.user_id,
            role: user.role,
        }),
    }
}

/// Only admins may do this; `what` completes "only admins can …".
pub fn require_admin(actor: &Actor, what: &str) -> AppResult<()> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(AppError::admin_required(&actor.user_id, what))
    }
}

/// Users may ask about themselves; only admins may ask about others.
pub fn require_self_or_admin(actor: &Actor, user_id: &str) -> AppResult<()> {
    if actor.user_id == user_id || actor.is_admin() {
        Ok(())
    } else {
        Err(AppError::new(
            Reason::AdminRequired,
            format!(
                "organizers can only check their own permissions, not those of user {user_id:?}"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::Role;

    fn user(role: Role, active: bool) -> UserRef {
        UserRef {
            user_id: "u1".into(),
            role,
            active,
        }
    }

    #[test]
    fn unknown_actor_is_unauthenticated() {
        let err = authenticate("c1", "u1", None).unwrap_err();
        assert_eq!(err.reason(), Some(Reason::ActorUnknown));
    }

    #[test]
    fn inactive_actor_is_denied() {
        let err = authenticate("c1", "u1", Some(user(Role::Admin, false))).unwrap_err();
        assert_eq!(err.reason(), Some(Reason::ActorInactive));
    }

    #[test]
    fn active_actor_keeps_the_directory_role() {
        let actor = authenticate("c1", "u1", Some(user(Role::Organizer, true))).unwrap();
        assert_eq!(actor.role, Role::Organizer);
        assert!(require_admin(&actor, "edit groups").is_err());
        assert!(require_self_or_admin(&actor, "u1").is_ok());
        assert!(require_self_or_admin(&actor, "u2").is_err());
        let admin = authenticate("c1", "u1", Some(user(Role::Admin, true))).unwrap();
        assert!(require_admin(&admin, "edit groups").is_ok());
        assert!(require_self_or_admin(&admin, "u2").is_ok());
    }
}
