//! Unreachable holders: after a change that may leave someone holding a conversation they cannot answer
//! (a deactivation, an access group's change, a conversation's tags), the use case that made it applies the
//! campaign's `on_unreachable_holder` in the same transaction, under the campaign's lock it took first.

use std::collections::BTreeMap;

use crate::domain::holders::{OnUnreachableHolder, Unreachable};
use crate::error::AppResult;
use crate::store::Conn;
use crate::store::auto_assign::LockedSettings;
use crate::store::holders::{self, Held};
use crate::store::waiting::{self, Requeue};

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
