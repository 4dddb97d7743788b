//! Rules for access groups: what a valid group looks like and who may be in one.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::model::{Role, UserRef};
use crate::domain::validate;
use crate::error::{AppError, AppResult, Reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    pub view: bool,
    pub reply: bool,
}

/// An access group with its members and explicit conversations.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessGroup {
    pub access_group_id: Uuid,
    pub name: String,
    pub can_view: bool,
    pub can_reply: bool,
    pub scope_all: bool,
    pub scope_tags: Vec<String>,
    pub conversation_ids: Vec<String>,
    pub organizer_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `lower(name)` as the database computes it: the listing order and page-token key.
    pub name_key: String,
}

/// A group with its active organizers and how many selected conversations it lets them view and reply to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupCoverage {
    pub access_group_id: Uuid,
    pub name: String,
    pub organizer_ids: Vec<String>,
    pub covered: i64,
}

/// A group that grants a user something on one conversation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupGrant {
    pub access_group_id: Uuid,
    pub name: String,
    pub can_view: bool,
    pub can_reply: bool,
}

/// A group to create, validated.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub name: String,
    pub permissions: Permissions,
    pub scope: GroupScope,
    pub organizer_ids: Vec<String>,
}

/// The fields an update sets; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct GroupChanges {
    pub name: Option<String>,
    pub permissions: Option<Permissions>,
    pub scope: Option<GroupScope>,
}

/// A group's permissions must grant something, and reply needs view.
pub fn check_permissions(field: &str, permissions: Permissions) -> AppResult<()> {
    if !permissions.view {
        let message = if permissions.reply {
            "reply permission requires view permission: set view too"
        } else {
            "an access group must grant at least view permission"
        };
        return Err(AppError::invalid(field, message));
    }
    Ok(())
}

/// Which conversations an access group covers (the proto's `AccessGroupScope`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupScope {
    pub all_conversations: bool,
    pub member_tags: Vec<String>,
    pub conversation_ids: Vec<String>,
}

/// Validates a scope and normalises its lists; an empty scope would grant nothing, so it is refused.
pub fn normalize_scope(field: &str, scope: GroupScope) -> AppResult<GroupScope> {
    let member_tags = validate::tags(&format!("{field}.member_tags"), &scope.member_tags)?;
    let mut conversation_ids = validate::id_list(
        &format!("{field}.conversation_ids"),
        &scope.conversation_ids,
        validate::MAX_SCOPE_CONVERSATIONS,
    )?;
    // Byte order, as every statement that locks several conversations takes them (`COLLATE "C"`): inserting
    // the listing share-locks each conversation, and one order for everyone means no deadlocks.
    conversation_ids.sort();
    if !scope.all_conversations && member_tags.is_empty() && conversation_ids.is_empty() {
        return Err(AppError::invalid(
            field,
            "the scope is empty: set all_conversations, member_tags or conversation_ids",
        ));
    }
    Ok(GroupScope {
        all_conversations: scope.all_conversations,
        member_tags,
        conversation_ids,
    })
}

/// Every requested organizer must exist, be active and be an organizer (admins see everything anyway).
pub fn check_organizers(requested: &[String], found: &[UserRef]) -> AppResult<()> {
    let missing: Vec<&str> = requested
        .iter()
        .filter(|id| !found.iter().any(|u| &u.user_id == *id))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(AppError::new(
            Reason::OrganizerNotFound,
            format!(
                "these users are not users of this campaign: {}",
                missing.join(", ")
            ),
        ));
    }
    if let Some(admin) = found.iter().find(|u| u.role == Role::Admin) {
        return Err(AppError::invalid(
            "organizer_ids",
            format!(
                "user {:?} is an admin; admins already have access to every conversation, \
                 only organizers belong in access groups",
                admin.user_id
            ),
        ));
    }
    if let Some(inactive) = found.iter().find(|u| !u.active) {
        return Err(AppError::new(
            Reason::OrganizerInactive,
            format!(
                "user {:?} is inactive and cannot be added to access groups",
                inactive.user_id
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(id: &str, active: bool) -> UserRef {
        UserRef {
            user_id: id.into(),
            role: Role::Organizer,
            active,
        }
    }

    #[test]
    fn permissions_must_include_view() {
        assert!(
            check_permissions(
                "p",
                Permissions {
                    view: true,
                    reply: true
                }
            )
            .is_ok()
        );
        assert!(
            check_permissions(
                "p",
                Permissions {
                    view: true,
                    reply: false
                }
            )
            .is_ok()
        );
        assert!(
            check_permissions(
                "p",
                Permissions {
                    view: false,
                    reply: true
                }
            )
            .is_err()
        );
        assert!(
            check_permissions(
                "p",
                Permissions {
                    view: false,
                    reply: false
                }
            )
            .is_err()
        );
    }

    #[test]
    fn empty_scope_is_refused_and_lists_are_normalised() {
        assert!(normalize_scope("scope", GroupScope::default()).is_err());
        let scope = normalize_scope(
            "scope",
            GroupScope {
                all_conversations: false,
                member_tags: vec!["b".into(), "a".into(), "b".into()],
                conversation_ids: vec!["c2".into(), "c1".into(), "c1".into()],
            },
        )
        .unwrap();
        assert_eq!(scope.member_tags, vec!["a", "b"]);
        assert_eq!(scope.conversation_ids, vec!["c1", "c2"]);
        assert!(
            normalize_scope(
                "scope",
                GroupScope {
                    all_conversations: true,
                    ..GroupScope::default()
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn organizers_must_exist_be_active_and_not_admins() {
        let requested = vec!["o1".to_string(), "o2".into()];
        assert!(check_organizers(&requested, &[org("o1", true), org("o2", true)]).is_ok());
        assert_eq!(
            check_organizers(&requested, &[org("o1", true)])
                .unwrap_err()
                .reason(),
            Some(Reason::OrganizerNotFound)
        );
        let admin = UserRef {
            user_id: "o2".into(),
            role: Role::Admin,
            active: true,
        };
        assert!(matches!(
            check_organizers(&requested, &[org("o1", true), admin]),
            Err(AppError::InvalidArgument(_))
        ));
        assert_eq!(
            check_organizers(&requested, &[org("o1", true), org("o2", false)])
                .unwrap_err()
                .reason(),
            Some(Reason::OrganizerInactive)
        );
    }
}
