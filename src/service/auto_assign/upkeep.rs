//! Upkeep the sweep runs: organizers' load changes folded, old trigger ids forgotten.

use crate::error::AppResult;
use crate::store::{Store, auto_assign};

/// Folds every campaign's pending load changes into its organizers' counts, one campaign at a time under
/// its auto-assign lock; returns how many changes. Batches that read loads fold their own campaign's.
pub async fn fold_loads(store: &Store) -> AppResult<u64> {
    let campaigns = {
        let mut conn = store.acquire().await?;
        auto_assign::campaigns_with_load_changes(&mut conn).await?
    };
    let mut folded = 0;
    for campaign_id in campaigns {
        let mut tx = store.begin().await?;
        auto_assign::lock(&mut tx, &campaign_id).await?;
        folded += auto_assign::fold_loads(&mut tx, &campaign_id).await?;
        tx.commit().await?;
    }
    Ok(folded)
}

/// Forgets trigger ids and reply message ids older than `retention`; returns how many.
pub async fn prune_triggers(store: &Store, retention: std::time::Duration) -> AppResult<u64> {
    let mut conn = store.acquire().await?;
    let triggers = auto_assign::prune_triggers(&mut conn, retention).await?;
    // Reply message ids are remembered as long: both deduplicate the messaging service's retries.
    let replies = auto_assign::prune_replies(&mut conn, retention).await?;
    Ok(triggers + replies)
}
