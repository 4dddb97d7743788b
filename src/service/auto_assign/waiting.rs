//! ListWaitingConversations, and the periodic safety sweep that drains what an event-driven drain missed.

use crate::domain::auto_assign::WaitingConversation;
use crate::domain::opaque::CampaignIds;
use crate::domain::paging::{self, PageScope};
use crate::domain::validate::Violations;
use crate::error::AppResult;
use crate::observability::{DRAINS, WAITING_CONVERSATIONS, WAITING_OLDEST_SECONDS};
use crate::service::{ActorCall, Page, authenticate};
use crate::store::{Store, waiting};

use super::Coalescer;

/// ListWaitingConversations: the queue in the order it drains; organizers see what they may view, with
/// positions counted among those alone (1 = the first they may view), so a hidden conversation waiting
/// ahead moves nothing they see. Page tokens carry the queue key opaque (it counts every campaign's queue).
pub async fn list_waiting(
    store: &Store,
    call: &ActorCall,
    page_size: i32,
    page_token: &str,
) -> AppResult<Page<WaitingConversation>> {
    let mut violations = Violations::default();
    let limit = violations.check(paging::page_size(page_size));
    violations.finish()?;
    let mut conn = store.acquire().await?;
    let actor = authenticate(&mut conn, call).await?;
    let visible_to = (!actor.is_admin()).then_some(actor.user_id.as_str());
    let pages = PageScope::waiting(&call.campaign_id, visible_to);
    let ids = CampaignIds::new(store.opaque_secret().await?, &call.campaign_id);
    let after = pages.after_position(&ids, page_token)?;
    let rows = waiting::list(&mut conn, &call.campaign_id, visible_to, after, limit + 1).await?;
    Ok(Page::from_rows(rows, limit, |row| {
        pages.queue_token(&ids, row.position)
    }))
}

/// One pass of the safety sweep: every campaign whose queue may hold conversations gets a drain (a replica
/// that died between a freeing commit and its drain leaves such work behind), and the queue's gauges are
/// published.
pub async fn sweep(store: &Store, coalescer: &Coalescer) -> AppResult<usize> {
    let mut conn = store.acquire().await?;
    let campaigns = waiting::campaigns(&mut conn).await?;
    let (waiting, oldest) = waiting::totals(&mut conn).await?;
    metrics::gauge!(WAITING_CONVERSATIONS).set(waiting as f64);
    metrics::gauge!(WAITING_OLDEST_SECONDS).set(oldest);
    for campaign_id in &campaigns {
        metrics::counter!(DRAINS, "trigger" => "sweep").increment(1);
        coalescer.drain_waiting(campaign_id);
    }
    Ok(campaigns.len())
}
