//! Organizers' loads: the pending load changes of a campaign, folded into its counts by the holder of its
//! auto-assign lock.

use crate::error::AppResult;
use crate::store::Conn;

/// The CTEs `folded` (the load changes deleted), `pending` (their sum per campaign and organizer) and
/// `counted` (added to the counts) for the campaigns of the text-array expression `campaigns`. Only the
/// holder of a campaign's auto-assign lock may fold it: a load is the folded count plus the pending changes,
/// read in one snapshot, and only lock holders fold, so no change is counted twice or missed (see the
/// `organizer_loads` migration).
pub(super) fn fold_ctes(campaigns: &str) -> String {
    format!(
        "folded AS ( \
           DELETE FROM organizer_load_changes WHERE campaign_id = ANY({campaigns}) \
           RETURNING campaign_id, user_id, delta \
         ), pending AS ( \
           SELECT campaign_id, user_id, sum(delta)::integer AS delta FROM folded GROUP BY campaign_id, user_id \
         ), counted AS ( \
           INSERT INTO organizer_loads AS l (campaign_id, user_id, open) \
           SELECT campaign_id, user_id, delta FROM pending \
           ON CONFLICT (campaign_id, user_id) DO UPDATE SET open = l.open + excluded.open \
         )"
    )
}

/// Folds a campaign's pending load changes into its counts, under the auto-assign lock the caller holds;
/// for campaigns whose batches do not read loads. Returns how many changes it folded.
pub async fn fold_loads(conn: &mut Conn, campaign_id: &str) -> AppResult<u64> {
    let sql = format!(
        "WITH {} SELECT count(*) FROM folded",
        fold_ctes("ARRAY[$1::text]")
    );
    let folded: i64 = sqlx::query_scalar(&sql)
        .bind(campaign_id) // $1 campaign_id
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(folded).unwrap_or(0))
}

/// Campaigns with load changes not yet folded into their counts.
pub async fn campaigns_with_load_changes(conn: &mut Conn) -> AppResult<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT campaign_id FROM organizer_load_changes")
            .fetch_all(conn)
            .await?,
    )
}
