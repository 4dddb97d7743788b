//! Access groups (AccessGroupService): admins manage them; anyone may ask what access a user has.

use uuid::Uuid;

use crate::domain::access::{has_reply_permission, may_view};
use crate::domain::access_group::{
    AccessGroup, GroupChanges, GroupCoverage, GroupGrant, GroupScope, NewGroup, Permissions,
    check_organizers, check_permissions, normalize_scope,
};
use crate::domain::actor::require_admin;
use crate::domain::effects::Change;
use crate::domain::model::{Actor, Role};
use crate::domain::paging;
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult, Reason};
use crate::service::conversations::{check_subject_request, subject_user, view, visible};
use crate::service::holders::return_unreachable;
use crate::service::{ActorCall, AfterCommit, Page, authenticate, lock_actor};
use crate::store::auto_assign::LockedSettings;
use crate::store::holders::Held;
use crate::store::{Conn, Store, access_groups, auto_assign, conversations, users};

/// What CheckAccess answers.
#[derive(Debug, Clone)]
pub struct AccessCheck {
    pub can_view: bool,
    pub can_reply: bool,
    pub is_admin: bool,
    pub grants: Vec<GroupGrant>,
}

/// A group ListEligibleAssignees offers, and whether it covers the whole selection.
#[derive(Debug, Clone)]
pub struct EligibleGroup {
    pub group: GroupCoverage,
    pub covers_selection: bool,
}

/// CreateAccessGroup: admins.
#[tracing::instrument(name = "db.transaction", skip_all)]
pub async fn create(
    store: &Store,
    after: &AfterCommit,
    call: &ActorCall,
    name: &str,
    permissions: Permissions,
    scope: GroupScope,
    organizer_ids: &[String],
) -> AppResult<AccessGroup> {
    let mut violations = Violations::default();
    let name = violations.check(validate::text(
        "name",
        name,
        validate::MAX_GROUP_NAME_LEN,
        true,
    ));
    violations.check(check_permissions("permissions", permissions));
    let scope = violations.check(normalize_scope("scope", scope));
    let organizer_ids = violations.check(validate::id_list(
        "organizer_ids",
        organizer_ids,
        validate::MAX_IDS_PER_REQUEST,
    ));
    violations.finish()?;
    let mut tx = store.begin().await?;
    admin(&mut tx, call, "create access groups").await?;
    check_organizers_exist(&mut tx, call, &organizer_ids).await?;
    check_conversations_exist(&mut tx, call, &scope.conversation_ids).await?;
    let group = NewGroup {
        name,
        permissions,
        scope,
        organizer_ids,
    };
    let created = access_groups::create(&mut tx, &call.campaign_id, Uuid::new_v4(), &group).await?;
    tx.commit().await?;
    after.committed(&call.campaign_id, Change::AccessGroupCreated);
    Ok(created)
}

/// GetAccessGroup: admins any; organizers only groups they belong to.
pub async fn get(store: &Store, call: &ActorCall, access_group_id: &str) -> AppResult<AccessGroup> {
    let id = group_id(access_group_id)?;
    let mut conn = store.acquire().await?;
    let actor = authenticate(&mut conn, call).await?;
    let group = access_groups::get(&mut conn, &call.campaign_id, id)
        .await?
        .ok_or_else(|| AppError::access_group_not_found(id))?;
    if actor.role == Role::Organizer && !group.organizer_ids.contains(&actor.user_id) {
        return Err(AppError::new(
            Reason::NotAMember,
            format!(
                "organizers can only see the access groups they belong to, and you are not in {id}"
            ),
        ));
    }
    Ok(group)
}

/// ListAccessGroups: admins any (optionally of one organizer); organizers their own.
pub async fn list(
    store: &Store,
    call: &ActorCall,
    organizer_id: &str,
    page_size: i32,
    page_token: &str,
) -> AppResult<Page<AccessGroup>> {
    let mut violations = Violations::default();
    let requested = violations.check(validate::optional_id("organizer_id", organizer_id));
    let limit = violations.check(paging::page_size(page_size));
    // The token is bound to the organizer as resolved below (by the actor's role); a token good for
    // neither reading is reported now, with the other fields.
    let as_named = paging::PageScope::access_groups(&call.campaign_id, requested.as_deref());
    let as_actor = paging::PageScope::access_groups(&call.campaign_id, Some(&call.actor_id));
    if as_actor.after(page_token).is_err() {
        violations.check(as_named.after(page_token));
    }
    violations.finish()?;
    let mut conn = store.acquire().await?;
    let actor = authenticate(&mut conn, call).await?;
    let member = match (actor.role, requested) {
        (Role::Admin, requested) => requested,
        (Role::Organizer, Some(id)) if id != actor.user_id => {
            return Err(AppError::new(
                Reason::AdminRequired,
                "organizers can only list their own access groups; leave organizer_id empty",
            ));
        }
        (Role::Organizer, _) => Some(actor.user_id.clone()),
    };
    // Bound to the organizer as resolved, so an organizer's token is the same with or without their id.
    let pages = paging::PageScope::access_groups(&call.campaign_id, member.as_deref());
    let after = pages.after(page_token)?;
    let rows = access_groups::list(
        &mut conn,
        &call.campaign_id,
        member.as_deref(),
        after.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Page::from_rows(rows, limit, |row| {
        pages.token(&row.name_key)
    }))
}

/// UpdateAccessGroup: admins; a new scope replaces the old one whole.
#[tracing::instrument(name = "db.transaction", skip_all)]
pub async fn update(
    store: &Store,
    after: &AfterCommit,
    call: &ActorCall,
    access_group_id: &str,
    name: Option<&str>,
    permissions: Option<Permissions>,
    scope: Option<GroupScope>,
) -> AppResult<AccessGroup> {
    let mut violations = Violations::default();
    let id = violations.check(group_id(access_group_id));
    let name = violations.check(
        name.map(|name| validate::text("name", name, validate::MAX_GROUP_NAME_LEN, true))
            .transpose(),
    );
    if let Some(permissions) = permissions {
        violations.check(check_permissions("permissions", permissions));
    }
    let scope = violations.check(
        scope
            .map(|scope| normalize_scope("scope", scope))
            .transpose(),
    );
    violations.finish()?;
    let mut tx = store.begin().await?;
    // A narrower scope or permission may leave its organizers holding what they cannot answer: the
    // campaign's lock comes first (the lock order), then the actor.
    let settings = auto_assign::lock(&mut tx, &call.campaign_id).await?;
    let actor = admin(&mut tx, call, "change access groups").await?;
    if let Some(scope) = &scope {
        check_conversations_exist(&mut tx, call, &scope.conversation_ids).await?;
    }
    let changes = GroupChanges {
        name,
        permissions,
        scope,
    };
    let updated = access_groups::update(&mut tx, &call.campaign_id, id, &changes)
        .await?
        .ok_or_else(|| AppError::access_group_not_found(id))?;
    let returned =
        return_unreachable_of(&mut tx, call, &settings, &actor, &updated.organizer_ids).await?;
    tx.commit().await?;
    after.committed(&call.campaign_id, Change::AccessGroupUpdated);
    after.returned_unreachable(&call.campaign_id, returned);
    Ok(updated)
}

/// DeleteAccessGroup: admins.
#[tracing::instrument(name = "db.transaction", skip_all)]
pub async fn delete(
    store: &Store,
    after: &AfterCommit,
    call: &ActorCall,
    access_group_id: &str,
) -> AppResult<()> {
    let id = group_id(access_group_id)?;
    let mut tx = store.begin().await?;
    let settings = auto_assign::lock(&mut tx, &call.campaign_id).await?;
    let actor = admin(&mut tx, call, "delete access groups").await?;
    let group = access_groups::get(&mut tx, &call.campaign_id, id)
        .await?
        .ok_or_else(|| AppError::access_group_not_found(id))?;
    if !access_groups::delete(&mut tx, &call.campaign_id, id).await? {
        return Err(AppError::access_group_not_found(id));
    }
    let returned =
        return_unreachable_of(&mut tx, call, &settings, &actor, &group.organizer_ids).await?;
    tx.commit().await?;
    after.committed(&call.campaign_id, Change::AccessGroupDeleted);
    after.returned_unreachable(&call.campaign_id, returned);
    Ok(())
}

/// AddOrganizers (`add`) and RemoveOrganizers: admins. Removing needs no directory check, so a departed
/// user can always be removed.
#[tracing::instrument(name = "db.transaction", skip_all)]
pub async fn change_members(
    store: &Store,
    after: &AfterCommit,
    call: &ActorCall,
    access_group_id: &str,
    organizer_ids: &[String],
    add: bool,
) -> AppResult<AccessGroup> {
    let mut violations = Violations::default();
    let id = violations.check(group_id(access_group_id));
    let organizer_ids = violations.check(validate::id_list(
        "organizer_ids",
        organizer_ids,
        validate::MAX_IDS_PER_REQUEST,
    ));
    violations.finish()?;
    let mut tx = store.begin().await?;
    let settings = auto_assign::lock(&mut tx, &call.campaign_id).await?;
    let actor = admin(&mut tx, call, "change access group members").await?;
    if add {
        check_organizers_exist(&mut tx, call, &organizer_ids).await?;
    }
    let changed =
        access_groups::change_members(&mut tx, &call.campaign_id, id, &organizer_ids, add)
            .await?
            .ok_or_else(|| AppError::access_group_not_found(id))?;
    let mut returned = 0;
    if !add {
        // Those removed may have lost reply access to what they hold.
        returned = return_unreachable_of(&mut tx, call, &settings, &actor, &organizer_ids).await?;
    }
    tx.commit().await?;
    let change = if add {
        Change::OrganizersAdded
    } else {
        Change::OrganizersRemoved
    };
    after.committed(&call.campaign_id, change);
    after.returned_unreachable(&call.campaign_id, returned);
    Ok(changed)
}

/// CheckAccess: what the actor (or, for admins, another user) may do on a conversation, and through which
/// groups. `can_view` is `may_view`, the one visibility rule; `can_reply` is reply *permission* (whether
/// they may reply right now also needs the assignment: CheckReplyPermission).
pub async fn check_access(
    store: &Store,
    call: &ActorCall,
    conversation_id: &str,
    user_id: &str,
) -> AppResult<AccessCheck> {
    let user_id = check_subject_request(conversation_id, user_id)?;
    let mut conn = store.acquire().await?;
    let actor = authenticate(&mut conn, call).await?;
    let user = subject_user(&mut conn, call, &actor, user_id.as_deref()).await?;
    // Organizers ask about themselves: what they may not view does not exist for them.
    let viewed = if actor.is_admin() {
        view(&mut conn, call, &user, conversation_id).await?
    } else {
        visible(&mut conn, call, &user, conversation_id).await?
    };
    let grants = if user.active {
        access_groups::grants(&mut conn, &call.campaign_id, &user.user_id, conversation_id).await?
    } else {
        Vec::new()
    };
    let assignee = viewed.conversation.assignee_id.as_deref();
    Ok(AccessCheck {
        can_view: may_view(&user, assignee, viewed.grants),
        can_reply: has_reply_permission(&user, viewed.grants),
        is_admin: user.active && user.role == Role::Admin,
        grants,
    })
}

/// ListEligibleAssignees, the bulk user picker: admins.
pub async fn list_eligible_assignees(
    store: &Store,
    call: &ActorCall,
    conversation_ids: &[String],
    all_access_groups: bool,
) -> AppResult<Vec<EligibleGroup>> {
    let ids = validate::id_list(
        "conversation_ids",
        conversation_ids,
        validate::MAX_SCOPE_CONVERSATIONS,
    )?;
    if ids.is_empty() {
        return Err(AppError::invalid(
            "conversation_ids",
            "select at least one conversation",
        ));
    }
    let mut conn = store.acquire().await?;
    admin(&mut conn, call, "list eligible assignees for bulk actions").await?;
    check_conversations_exist(&mut conn, call, &ids).await?;
    let selected = ids.len() as i64;
    let groups = access_groups::coverage(&mut conn, &call.campaign_id, &ids).await?;
    Ok(groups
        .into_iter()
        .map(|group| EligibleGroup {
            covers_selection: group.covered == selected,
            group,
        })
        .filter(|eligible| all_access_groups || eligible.covers_selection)
        .collect())
}

/// After a change of a group by `actor`: what `organizers` hold and can no longer answer goes back to the
/// queue, if the campaign says so (`service::holders`). Returns how many.
async fn return_unreachable_of(
    conn: &mut Conn,
    call: &ActorCall,
    settings: &LockedSettings,
    actor: &Actor,
    organizers: &[String],
) -> AppResult<usize> {
    let organizers: Vec<&str> = organizers.iter().map(String::as_str).collect();
    return_unreachable(
        conn,
        &call.campaign_id,
        settings,
        Held::By(&organizers),
        Some(&actor.user_id),
        call.request_id.as_deref(),
    )
    .await
}

/// The actor, who must be an admin, read under a share lock so a concurrent demotion waits for the change.
async fn admin(conn: &mut Conn, call: &ActorCall, what: &str) -> AppResult<Actor> {
    let (actor, _) = lock_actor(conn, call, &[]).await?;
    require_admin(&actor, what)?;
    Ok(actor)
}

fn group_id(value: &str) -> AppResult<Uuid> {
    if value.is_empty() {
        return Err(AppError::invalid(
            "access_group_id",
            "access_group_id is required",
        ));
    }
    Uuid::parse_str(value).map_err(|_| {
        AppError::invalid(
            "access_group_id",
            format!(
                "access_group_id {value:?} is not a UUID; use the id CreateAccessGroup returned"
            ),
        )
    })
}

/// Every organizer must exist, be active and be an organizer.
async fn check_organizers_exist(
    conn: &mut Conn,
    call: &ActorCall,
    ids: &[String],
) -> AppResult<()> {
    let found = users::find_many(conn, &call.campaign_id, ids).await?;
    let found: Vec<_> = found.iter().map(|user| user.to_ref()).collect();
    check_organizers(ids, &found)
}

/// Every explicitly listed conversation must exist.
async fn check_conversations_exist(
    conn: &mut Conn,
    call: &ActorCall,
    ids: &[String],
) -> AppResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let missing = conversations::missing(conn, &call.campaign_id, ids).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
    Err(AppError::new(
        Reason::ConversationNotFound,
        format!(
            "{} listed conversation(s) do not exist in this campaign: {}{}",
            missing.len(),
            shown.join(", "),
            if missing.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ),
    ))
}
