//! What a use case sets off once its change has committed, on the replica that made it: the campaign's
//! waiting queue drained ([`Coalescer::poke`]) and its feed numbered and fanned out ([`Feed::wake`]). Which
//! of them follows which change is the rule `domain::effects::after_commit`; use cases only say what they
//! changed.

use crate::domain::effects::{self, Change};
use crate::service::auto_assign::Coalescer;
use crate::service::feed::Feed;

/// Cheap to clone; clones share the coalescer and the feed.
#[derive(Clone)]
pub struct AfterCommit {
    coalescer: Coalescer,
    feed: Feed,
}

impl AfterCommit {
    pub fn new(coalescer: Coalescer, feed: Feed) -> Self {
        Self { coalescer, feed }
    }

    /// After `change` of the campaign succeeded (committed, or found already made): starts what must follow
    /// it. Returns at once.
    pub fn committed(&self, campaign_id: &str, change: Change) {
        let effects = effects::after_commit(change);
        if effects.drain_waiting {
            self.coalescer.poke(campaign_id);
        }
        if effects.wake_feed {
            self.feed.wake(campaign_id);
        }
    }

    /// After a change that returned `returned` conversations of unreachable holders to the queue (see
    /// `service::holders`): what that calls for, if any were.
    pub fn returned_unreachable(&self, campaign_id: &str, returned: usize) {
        if returned > 0 {
            self.committed(campaign_id, Change::UnreachableReturned);
        }
    }
}
