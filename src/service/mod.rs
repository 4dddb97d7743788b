//! The use cases: one function per RPC, each reading top to bottom — validate, begin, lock and read
//! (`store`), decide (`domain`), write (`store`), commit — and returning domain values. The gRPC layer
//! decodes a request into plain arguments, calls one of these, and encodes what it returns. A use case that
//! changes something tells [`AfterCommit`] what it changed once it succeeded; the rule
//! `domain::effects::after_commit` decides what follows (a drain of the waiting queue, a feed wake-up).

pub mod access_groups;
mod after_commit;
pub mod agenda;
pub mod assignment;
pub mod auto_assign;
pub mod availability;
pub mod bulk;
pub mod conversations;
pub mod directory;
pub mod feed;
pub(crate) mod holders;
pub mod notices;
pub mod replies;
pub mod shifts;

pub use after_commit::AfterCommit;

use crate::domain::actor;
use crate::domain::model::{Actor, User, UserRef};
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult, Reason};
use crate::store::conversations::{Locked, LockedWithUsers};
use crate::store::{self, Conn, users};

/// A call made for a user of a campaign: who claims to act, where, and the call's request id. The claim
/// is checked against the directory by [`authenticate`].
#[derive(Debug, Clone)]
pub struct ActorCall {
    pub campaign_id: String,
    pub actor_id: String,
    pub request_id: Option<String>,
    /// The request id when the caller sent it (not generated): a retry with it changes nothing twice.
    pub idempotency_key: Option<String>,
}

/// A call made by a system (a system of record, the flow builder) for a campaign.
#[derive(Debug, Clone)]
pub struct SystemCall {
    pub campaign_id: String,
    pub request_id: Option<String>,
}

/// Who makes a call that both users and systems may make: a user acting, or a system.
#[derive(Debug, Clone)]
pub enum Caller {
    Actor(ActorCall),
    System(SystemCall),
}

impl Caller {
    pub fn campaign_id(&self) -> &str {
        match self {
            Caller::Actor(call) => &call.campaign_id,
            Caller::System(call) => &call.campaign_id,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            Caller::Actor(call) => call.request_id.as_deref(),
            Caller::System(call) => call.request_id.as_deref(),
        }
    }
}

/// The user a call about a user means: `user_id`, or the acting user's own when it is empty. A system caller
/// must name one; a mistake is recorded in `violations`.
pub fn user_meant(violations: &mut Violations, caller: &Caller, user_id: &str) -> String {
    let named = violations.check(validate::optional_id("user_id", user_id));
    match (caller, named) {
        (_, Some(id)) => id,
        (Caller::Actor(call), None) => call.actor_id.clone(),
        (Caller::System(_), None) => {
            violations.add("user_id", "user_id is required when no x-actor-id acts");
            String::new()
        }
    }
}

/// The user changing `what` of `target_id` (their availability, their shift schedule), share-locked and
/// refused unless it is their own or they are an admin; `None` for a system caller, who may change anyone's.
pub async fn lock_setter(
    conn: &mut Conn,
    setter: &Caller,
    target_id: &str,
    what: &str,
) -> AppResult<Option<Actor>> {
    let Caller::Actor(call) = setter else {
        return Ok(None);
    };
    let (actor, _) = lock_actor(conn, call, &[]).await?;
    actor::require_self_or_admin(&actor, target_id).map_err(|_| {
        AppError::new(
            Reason::AdminRequired,
            format!("organizers can only set their own {what}, not that of user {target_id:?}"),
        )
    })?;
    Ok(Some(actor))
}

/// The acting user as the directory knows them now; refused when unknown or inactive.
pub async fn authenticate(conn: &mut Conn, call: &ActorCall) -> AppResult<Actor> {
    let user = users::find(conn, &call.campaign_id, &call.actor_id).await?;
    actor::authenticate(
        &call.campaign_id,
        &call.actor_id,
        user.as_ref().map(|u| u.to_ref()),
    )
}

/// For a change: the actor, and the other users it names, read under `FOR SHARE` locks in the change's
/// transaction (after the rows it changes are locked), so a concurrent demotion or deactivation either
/// waits for the change or is seen by it. Returns the actor and those of `others` that exist.
pub async fn lock_actor(
    conn: &mut Conn,
    call: &ActorCall,
    others: &[&str],
) -> AppResult<(Actor, Vec<UserRef>)> {
    let users = users::lock_many(conn, &call.campaign_id, &actor_and(call, others)).await?;
    actor_among(call, &users, others)
}

/// The ids a change locks: the actor's, then `others`.
fn actor_and<'a>(call: &'a ActorCall, others: &[&'a str]) -> Vec<&'a str> {
    let mut ids = vec![call.actor_id.as_str()];
    ids.extend_from_slice(others);
    ids
}

/// The actor (refused when unknown or inactive) and those of `others` found among `users`.
fn actor_among(
    call: &ActorCall,
    users: &[User],
    others: &[&str],
) -> AppResult<(Actor, Vec<UserRef>)> {
    let find = |id: &str| users.iter().find(|u| u.user_id == id).map(|u| u.to_ref());
    let actor = actor::authenticate(&call.campaign_id, &call.actor_id, find(&call.actor_id))?;
    let others = others.iter().filter_map(|id| find(id)).collect();
    Ok((actor, others))
}

/// For a change of one conversation: locks it, then the actor and the other users it names (see
/// [`lock_actor`]), in one statement. Returns the conversation (`None`: it does not exist), the actor and
/// those of `others` that exist.
pub async fn lock_conversation_and_actor(
    conn: &mut Conn,
    call: &ActorCall,
    conversation_id: &str,
    others: &[&str],
) -> AppResult<(Option<Locked>, Actor, Vec<UserRef>)> {
    let LockedWithUsers { locked, users } = store::conversations::lock_with_users(
        conn,
        &call.campaign_id,
        conversation_id,
        &call.actor_id,
        &actor_and(call, others),
        call.idempotency_key.as_deref(),
    )
    .await?;
    let (actor, others) = actor_among(call, &users, others)?;
    Ok((locked, actor, others))
}

/// One page of a list, and the token of the next (empty on the last page).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

impl<T> Page<T> {
    /// `rows` were fetched with one extra to learn whether another page follows; drop it and name the
    /// token of the last row kept.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, token: impl Fn(&T) -> String) -> Self {
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(token).unwrap_or_default()
        } else {
            String::new()
        };
        Self {
            items: rows,
            next_page_token,
        }
    }
}
