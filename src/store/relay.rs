//! The NATS JetStream relay's positions and leases (`relay_positions`): how far each campaign's feed is
//! published, and which replica publishes it now.

use std::time::Duration;

use super::Conn;
use crate::error::AppResult;

/// A campaign this replica holds the lease of, and where its relay stands.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    pub campaign_id: String,
    /// The feed number of the last event JetStream acknowledged.
    pub relayed_seq: i64,
    /// That message's stream sequence (what the next publish expects as its subject's last).
    pub subject_seq: i64,
}

/// Takes (or renews) the lease of up to `limit` campaigns whose feed has events the relay has not
/// published, for `lease` from now: those nobody holds, whose holder's lease passed, or that `holder`
/// holds already. Returns them with their positions.
pub async fn claim(
    conn: &mut Conn,
    holder: &str,
    lease: Duration,
    limit: i64,
) -> AppResult<Vec<Claimed>> {
    Ok(sqlx::query_as(
        "WITH pending AS ( \
           SELECT f.campaign_id FROM feed_heads f \
             LEFT JOIN relay_positions r ON r.campaign_id = f.campaign_id \
            WHERE f.last_seq > coalesce(r.relayed_seq, 0) \
              AND (r.lease_until IS NULL OR r.lease_until < now() OR r.holder = $1) \
            ORDER BY f.campaign_id LIMIT $3 \
         ) \
         INSERT INTO relay_positions AS r (campaign_id, holder, lease_until) \
         SELECT campaign_id, $1, now() + make_interval(secs => $2) FROM pending \
         ON CONFLICT (campaign_id) DO UPDATE \
            SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until \
          WHERE r.lease_until IS NULL OR r.lease_until < now() OR r.holder = $1 \
         RETURNING r.campaign_id, r.relayed_seq, r.subject_seq",
    )
    .bind(holder) // $1
    .bind(lease.as_secs_f64()) // $2
    .bind(limit) // $3
    .fetch_all(conn)
    .await?)
}

/// Moves the campaign's position to `relayed_seq` (stream sequence `subject_seq`) and renews the lease,
/// if `holder` still holds it. Whether it did: `false` means another replica took the campaign.
pub async fn advance(
    conn: &mut Conn,
    holder: &str,
    position: &Claimed,
    lease: Duration,
) -> AppResult<bool> {
    let moved = sqlx::query(
        "UPDATE relay_positions \
            SET relayed_seq = $3, subject_seq = $4, lease_until = now() + make_interval(secs => $5) \
          WHERE campaign_id = $1 AND holder = $2",
    )
    .bind(&position.campaign_id) // $1
    .bind(holder) // $2
    .bind(position.relayed_seq) // $3
    .bind(position.subject_seq) // $4
    .bind(lease.as_secs_f64()) // $5
    .execute(conn)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Gives up the leases `holder` holds (a replica shutting down), so others take them at once.
pub async fn release(conn: &mut Conn, holder: &str) -> AppResult<()> {
    sqlx::query("UPDATE relay_positions SET holder = NULL, lease_until = NULL WHERE holder = $1")
        .bind(holder)
        .execute(conn)
        .await?;
    Ok(())
}

/// Per campaign, how many events wait to be relayed and since when the oldest of them was written.
pub async fn lag(conn: &mut Conn) -> AppResult<Vec<(String, i64, f64)>> {
    Ok(sqlx::query_as(
        "SELECT f.campaign_id, f.last_seq - coalesce(r.relayed_seq, 0), \
                coalesce(extract(epoch FROM now() - ( \
                  SELECT e.occurred_at FROM assignment_events e \
                   WHERE e.campaign_id = f.campaign_id AND e.seq = coalesce(r.relayed_seq, 0) + 1)), 0)::float8 \
           FROM feed_heads f LEFT JOIN relay_positions r ON r.campaign_id = f.campaign_id \
          WHERE f.last_seq > coalesce(r.relayed_seq, 0)",
    )
    .fetch_all(conn)
    .await?)
}
