//! A bulk request's targets, checked up front.

use super::BulkAction;
use crate::domain::model::{Actor, Role, UserRef};
use crate::error::{AppError, AppResult, Reason};

/// What a bulk request asks for, before the stream's conversations arrive.
#[derive(Debug, Clone, Default)]
pub struct BulkOptions {
    /// Users named one by one, in the order given.
    pub assignee_ids: Vec<String>,
    /// Active organizers of these groups (found in the directory), in the order given.
    pub group_organizers: Vec<String>,
    /// The "All Access Groups" toggle: assign to organizers without permission and record it in a new group.
    pub grant_access: bool,
    pub new_group_name: Option<String>,
}

/// Checks a request's options up front and returns the targets in their round-robin order. A bad option
/// fails the whole call before anything is written.
pub fn resolve_targets(
    action: BulkAction,
    actor: &Actor,
    options: &BulkOptions,
    named_users: &[UserRef],
) -> AppResult<Vec<UserRef>> {
    if action == BulkAction::Reassign && actor.role == Role::Organizer {
        return Err(AppError::new(
            Reason::OrganizersCannotReassign,
            "organizers cannot reassign conversations, in bulk or otherwise; ask an admin",
        ));
    }
    if action == BulkAction::Unassign {
        return Ok(Vec::new());
    }
    if options.grant_access {
        if actor.role == Role::Organizer {
            return Err(AppError::new(
                Reason::AdminRequired,
                "only admins can grant access by creating an access group",
            ));
        }
        if options.new_group_name.is_none() {
            return Err(AppError::invalid(
                "options.new_access_group_name",
                "grant_access needs new_access_group_name: the access group that records the new permissions",
            ));
        }
    }
    let mut targets: Vec<UserRef> = Vec::new();
    for id in &options.assignee_ids {
        let user = named_users
            .iter()
            .find(|u| &u.user_id == id)
            .ok_or_else(|| AppError::assignee_not_found(id))?;
        if !user.active {
            return Err(AppError::assignee_inactive(id));
        }
        targets.push(user.clone());
    }
    for id in &options.group_organizers {
        if !targets.iter().any(|t| &t.user_id == id) {
            targets.push(UserRef {
                user_id: id.clone(),
                role: Role::Organizer,
                active: true,
            });
        }
    }
    if targets.is_empty() {
        return Err(AppError::invalid(
            "options",
            "no one to assign to: name assignee_ids, or access_group_ids with active organizers",
        ));
    }
    if actor.role == Role::Organizer
        && let Some(other) = targets.iter().find(|t| t.user_id != actor.user_id)
    {
        let what = if other.role == Role::Admin {
            "an admin"
        } else {
            "another user"
        };
        return Err(AppError::new(
            Reason::OrganizerAssignsSelfOnly,
            format!(
                "organizers can only bulk assign conversations to themselves; {:?} is {what}",
                other.user_id
            ),
        ));
    }
    Ok(targets)
}
