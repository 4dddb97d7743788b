//! Unreachable holders: after a change that may leave someone holding a conversation they cannot answer
//! (a deactivation, an access group's change, a conversation's tags), the use case that made it applies the
//! campaign's `on_unreachable_holder` in the same transaction, under the campaign's lock it took first. A
//! member's message to such a conversation applies it again ([`return_if_unreachable`]).

use std::collections::BTreeMap;

use crate::domain::auto_assign::OnUnavailable;
use crate::domain::effects::Change;
use crate::domain::holders::{OnUnreachableHolder, Unreachable, absent};
use crate::domain::model::Conversation;
use crate::error::AppResult;
use crate::service::{AfterCommit, shifts};
use crate::store::auto_assign::{self, LockedSettings};
use crate::store::holders::{self, Held};
use crate::store::waiting::{self, Requeue};
use crate::store::{Conn, Store, conversations};

/// Returns the conversations of `held` whose holder cannot answer them to the front of the queue, if the
/// campaign says so (`settings`: its locked settings row, taken before anything else). Returns how many.
pub(crate) async fn return_unreachable(
    conn: &mut Conn,
    campaign_id: &str,
    settings: &LockedSettings,
    held: Held<'_>,
    actor_id: Option<&str>,
    request_id: Option<&str>,
) -> AppResult<usize> {
    if settings.on_unreachable_holder == OnUnreachableHolder::Keep {
        return Ok(0);
    }
    let unreachable = holders::lock_unreachable(conn, campaign_id, held).await?;
    let mut by_cause: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for held in &unreachable {
        // Spelled by the store from the rule: any other text would be a broken fragment.
        let cause =
            Unreachable::from_cause(&held.cause).map_or("HOLDER_UNREACHABLE", Unreachable::cause);
        by_cause
            .entry(cause)
            .or_default()
            .push(&held.conversation_id);
    }
    let mut returned = 0;
    for (cause, conversation_ids) in by_cause {
        let requeue = Requeue {
            conversation_ids: &conversation_ids,
            cause,
            record_lapse: false,
            stop_timing: false,
            actor_id,
            request_id,
        };
        returned += waiting::requeue(conn, campaign_id, requeue).await?.len();
    }
    Ok(returned)
}

/// A member wrote to a conversation whose holder cannot answer it, or is not there to (the batch read so):
/// in a transaction of its own, under the campaign's lock, reads the holder afresh and applies the
/// campaign's policy (`on_unreachable_holder`, or `on_unavailable` for a holder away, offline or off shift).
/// Returns the conversation as it is now if it went back to the queue, `None` if it stays (KEEP, or the
/// holder can answer it after all).
pub(crate) async fn return_if_unreachable(
    store: &Store,
    after: &AfterCommit,
    campaign_id: &str,
    conversation_id: &str,
    request_id: Option<&str>,
) -> AppResult<Option<Conversation>> {
    let mut tx = store.begin().await?;
    let settings = auto_assign::lock(&mut tx, campaign_id).await?;
    let held = Held::Conversation(conversation_id);
    let mut returned =
        return_unreachable(&mut tx, campaign_id, &settings, held, None, request_id).await?;
    if returned == 0 && settings.on_unavailable == OnUnavailable::ReturnToQueue {
        returned =
            return_if_absent(&mut tx, campaign_id, &settings, conversation_id, request_id).await?;
    }
    let now = if returned > 0 {
        conversations::find(&mut tx, campaign_id, conversation_id).await?
    } else {
        None
    };
    tx.commit().await?;
    if returned > 0 {
        after.committed(campaign_id, Change::UnreachableReturned);
    }
    Ok(now)
}

/// The conversation back to the front of the queue if its holder is away, offline or off shift now (read
/// after its lock; the caller holds the campaign's). Returns how many went back (0 or 1).
async fn return_if_absent(
    conn: &mut Conn,
    campaign_id: &str,
    settings: &LockedSettings,
    conversation_id: &str,
    request_id: Option<&str>,
) -> AppResult<usize> {
    let off_shift = shifts::record_passed(conn, campaign_id, settings).await?;
    let Some((holder, availability)) =
        holders::lock_holder(conn, campaign_id, conversation_id).await?
    else {
        return Ok(0);
    };
    let Some(why) = absent(availability, !off_shift.contains(&holder)) else {
        return Ok(0);
    };
    let requeue = Requeue {
        conversation_ids: &[conversation_id],
        cause: why.cause(),
        record_lapse: false,
        stop_timing: false,
        actor_id: None,
        request_id,
    };
    Ok(waiting::requeue(conn, campaign_id, requeue).await?.len())
}
