//! Domain rules: pure functions, no I/O.

pub mod access;
pub mod access_group;
pub mod actor;
pub mod assignment;
pub mod auto_assign;
pub mod bulk;
pub mod effects;
pub mod holders;
pub mod model;
pub mod opaque;
pub mod paging;
pub mod replies;
pub mod shifts;
pub mod validate;

/// Actors and users for the rules' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::model::{Actor, Role, UserRef};

    pub fn admin() -> Actor {
        Actor {
            user_id: "admin".into(),
            role: Role::Admin,
        }
    }

    pub fn organizer(id: &str) -> Actor {
        Actor {
            user_id: id.into(),
            role: Role::Organizer,
        }
    }

    pub fn user(id: &str, role: Role, active: bool) -> UserRef {
        UserRef {
            user_id: id.into(),
            role,
            active,
        }
    }
}
