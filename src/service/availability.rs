//! SetAvailability: who takes automatically assigned conversations now.

use crate::domain::auto_assign::OnUnavailable;
use crate::domain::effects::Change;
use crate::domain::model::{Availability, Changed, Role, User};
use crate::domain::validate::Violations;
use crate::error::{AppError, AppResult};
use crate::service::{AfterCommit, Caller, lock_setter, user_meant};
use crate::store::waiting::Requeue;
use crate::store::{Store, auto_assign, users, waiting};

/// SetAvailability. `availability` is `None` when the request named none. The user's row is locked for the
/// change, and the setter's role read under a share lock, so the decision holds until it commits.
pub async fn set_availability(
    store: &Store,
    after: &AfterCommit,
    setter: &Caller,
    user_id: &str,
    availability: Option<Availability>,
) -> AppResult<Changed<User>> {
    let done = availability_in_tx(store, setter, user_id, availability).await?;
    after.committed(setter.campaign_id(), Change::AvailabilitySet);
    Ok(done)
}

#[tracing::instrument(name = "db.transaction", skip_all)]
async fn availability_in_tx(
    store: &Store,
    setter: &Caller,
    user_id: &str,
    availability: Option<Availability>,
) -> AppResult<Changed<User>> {
    let mut violations = Violations::default();
    let target_id = user_meant(&mut violations, setter, user_id);
    if availability.is_none() {
        violations.add(
            "availability",
            "availability must be AVAILABILITY_AVAILABLE, AVAILABILITY_AWAY or AVAILABILITY_OFFLINE",
        );
    }
    violations.finish()?;
    let wanted = availability.expect("checked above");

    let mut tx = store.begin().await?;
    // Going away may return the user's conversations to the queue. Auto-assign batches take the campaign's
    // lock, then conversations, then share-lock the organizers; single changes take a conversation, then
    // its users. So the campaign's lock comes first here, then the conversations, then the user: no cycle.
    let settings = if wanted == Availability::Available {
        None
    } else {
        Some(auto_assign::lock(&mut tx, setter.campaign_id()).await?)
    };
    let returns = settings.is_some_and(|s| s.on_unavailable == OnUnavailable::ReturnToQueue);
    let held = if returns {
        waiting::lock_returnable(&mut tx, setter.campaign_id(), &target_id).await?
    } else {
        Vec::new()
    };
    let target = users::lock(&mut tx, setter.campaign_id(), &target_id).await?;
    let actor = lock_setter(&mut tx, setter, &target_id, "availability").await?;
    let target = target.ok_or_else(|| AppError::user_not_found(&target_id))?;
    if target.availability == wanted {
        return Ok(Changed {
            value: target,
            changed: false,
        });
    }
    let actor_id = actor.as_ref().map(|a| a.user_id.as_str());
    let user = users::set_availability(
        &mut tx,
        setter.campaign_id(),
        &target_id,
        wanted,
        actor_id,
        setter.request_id(),
    )
    .await?;
    // Going away with RETURN_TO_QUEUE: their open conversations go to the front of the queue, for others.
    if returns && user.role == Role::Organizer {
        let held: Vec<&str> = held.iter().map(String::as_str).collect();
        let requeue = Requeue {
            conversation_ids: &held,
            cause: "RETURNED_TO_QUEUE",
            record_lapse: false,
            stop_timing: false,
            actor_id,
            request_id: setter.request_id(),
        };
        waiting::requeue(&mut tx, setter.campaign_id(), requeue).await?;
    }
    tx.commit().await?;
    Ok(Changed {
        value: user,
        changed: true,
    })
}
