//! The inbox settings that switch auto-assignment on and steer it, and organizers' own capacities.

use crate::domain::actor::require_admin;
use crate::domain::auto_assign::{InboxSettings, SettingsChange};
use crate::domain::effects::Change;
use crate::domain::model::{Role, User};
use crate::domain::shifts;
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult};
use crate::service::{ActorCall, AfterCommit, authenticate, lock_actor};
use crate::store::notices::Notice;
use crate::store::{self, Store, auto_assign, inbox_settings, users};

/// The longest silence timer: 30 days.
const MAX_REPLY_WITHIN_SECONDS: i32 = 30 * 24 * 3600;

/// The most a priority level may be worth: a week of waiting.
const MAX_PRIORITY_STEP_SECONDS: i32 = 7 * 24 * 3600;

/// GetInboxSettings: any active user of the campaign.
pub async fn get_settings(store: &Store, call: &ActorCall) -> AppResult<Option<InboxSettings>> {
    let mut conn = store.acquire().await?;
    authenticate(&mut conn, call).await?;
    inbox_settings::get(&mut conn, &call.campaign_id).await
}

/// UpdateInboxSettings: admins; fields left unset keep their value.
#[tracing::instrument(name = "db.transaction", skip_all)]
pub async fn update_settings(
    store: &Store,
    after: &AfterCommit,
    call: &ActorCall,
    change: SettingsChange,
) -> AppResult<Option<InboxSettings>> {
    let mut violations = Violations::default();
    if change.default_capacity.is_some_and(|capacity| capacity < 0) {
        violations.add(
            "default_capacity",
            "default_capacity must be 0 (unlimited) or more",
        );
    }
    if change
        .reply_within_seconds
        .flatten()
        .is_some_and(|seconds| !(1..=MAX_REPLY_WITHIN_SECONDS).contains(&seconds))
    {
        violations.add(
            "reply_within_seconds",
            format!(
                "reply_within_seconds must be 0 (no timer) or 1 to {MAX_REPLY_WITHIN_SECONDS} (30 days)"
            ),
        );
    }
    if change
        .max_overdue_reassignments
        .is_some_and(|n| !(0..=100).contains(&n))
    {
        violations.add(
            "max_overdue_reassignments",
            "max_overdue_reassignments must be 0 to 100",
        );
    }
    if change
        .priority_step_seconds
        .is_some_and(|step| !(1..=MAX_PRIORITY_STEP_SECONDS).contains(&step))
    {
        violations.add(
            "priority_step_seconds",
            format!("priority_step_seconds must be 1 to {MAX_PRIORITY_STEP_SECONDS} (a week)"),
        );
    }
    if let Some(Err(message)) = change.time_zone.as_deref().map(shifts::check_time_zone) {
        violations.add("time_zone", message);
    }
    violations.finish()?;
    let changed_any = !change.is_empty();
    let schema = store.schema().await?;
    let mut tx = store.begin().await?;
    // The campaign's lock before the actor's share lock: the lock order everywhere (ARCHITECTURE.md).
    let locked = auto_assign::lock(&mut tx, &call.campaign_id).await?;
    let (actor, _) = lock_actor(&mut tx, call, &[]).await?;
    require_admin(&actor, "change inbox settings")?;
    let zone_changed = change
        .time_zone
        .as_ref()
        .is_some_and(|zone| *zone != locked.time_zone);
    let settings = if change.is_empty() {
        inbox_settings::get(&mut tx, &call.campaign_id).await?
    } else {
        Some(inbox_settings::update(&mut tx, &call.campaign_id, change, &actor.user_id).await?)
    };
    if zone_changed {
        // Every schedule now reads in the new zone: the boundary worker works out their next changes.
        store::shifts::recheck_all(&mut tx, &call.campaign_id).await?;
    }
    // The reply timers' setting or the time zone may have moved timed work: every replica's agenda reads
    // the campaign again.
    let changed = [Notice::TimedWorkChanged(&call.campaign_id)];
    let notices: &[Notice] = if changed_any { &changed } else { &[] };
    store::notices::commit_notifying(tx, schema, notices).await?;
    after.committed(&call.campaign_id, Change::SettingsUpdated);
    Ok(settings)
}

/// SetCapacity: admins set or clear an organizer's own capacity (`None`: the campaign default applies).
#[tracing::instrument(name = "db.transaction", skip_all)]
pub async fn set_capacity(
    store: &Store,
    after: &AfterCommit,
    call: &ActorCall,
    user_id: &str,
    capacity: Option<i32>,
) -> AppResult<User> {
    let mut violations = Violations::default();
    violations.check(validate::id("user_id", user_id));
    if capacity.is_some_and(|c| c < 0) {
        violations.add(
            "capacity",
            "capacity must be 0 (unlimited) or more, or unset",
        );
    }
    violations.finish()?;
    let mut tx = store.begin().await?;
    let target = users::lock(&mut tx, &call.campaign_id, user_id).await?;
    let (actor, _) = lock_actor(&mut tx, call, &[]).await?;
    require_admin(&actor, "set capacities")?;
    let target = target.ok_or_else(|| AppError::user_not_found(user_id))?;
    if target.role == Role::Admin {
        return Err(AppError::invalid(
            "user_id",
            format!(
                "user {user_id:?} is an admin; admins are never auto-assigned, so have no capacity"
            ),
        ));
    }
    let user = users::set_capacity(&mut tx, &call.campaign_id, user_id, capacity).await?;
    tx.commit().await?;
    after.committed(&call.campaign_id, Change::CapacitySet);
    Ok(user)
}
