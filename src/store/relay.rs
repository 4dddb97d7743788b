//! The NATS JetStream relay's positions and leases (`relay_positions`): how far each campaign's feed is
//! published, and which replica publishes it now.

use std::time::Duration;

use super::Conn;
use super::feed::EVENT_COLUMNS;
use crate::domain::model::AssignmentEvent;
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

/// Takes the lease of up to `limit` campaigns whose feed has events the relay has not published, for
/// `lease` from now: those nobody holds and those whose holder's lease passed. Returns them, with those
/// `holder` holds already, and their positions. A lease `holder` holds is renewed only once less than half
/// of it is left (publishing renews it too: [`advance`]), so a pass over campaigns it holds writes nothing.
///
/// One replica relays at a time, by preference: the smallest holder id whose lease runs. Another replica
/// takes nothing while it lives, and gives up what it holds at once, so the leases gather on one replica
/// (its bursts then meet no other publisher's messages in the stream) and move when it dies. Nothing
/// depends on it for correctness: every message names what must precede it.
///
/// `only`: one campaign's lease, and nothing written for another (`--single-campaign-transactions`).
pub async fn claim(
    conn: &mut Conn,
    holder: &str,
    lease: Duration,
    limit: i64,
    only: Option<&str>,
) -> AppResult<Vec<Claimed>> {
    Ok(sqlx::query_as(
        "WITH leader AS MATERIALIZED ( \
           /* the smallest holder whose lease runs (NULL: none) */ \
           SELECT min(holder) AS holder FROM relay_positions WHERE lease_until >= now() \
         ), yielded AS ( \
           UPDATE relay_positions r SET holder = NULL, lease_until = NULL FROM leader l \
            /* ours, while a replica with a smaller id relays */ \
            WHERE r.holder = $1 AND l.holder < $1 AND ($4::text IS NULL OR r.campaign_id = $4) \
         ), pending AS MATERIALIZED ( \
           SELECT f.campaign_id, r.holder, r.lease_until, r.relayed_seq, r.subject_seq \
             FROM feed_heads f CROSS JOIN leader l \
             LEFT JOIN relay_positions r ON r.campaign_id = f.campaign_id \
            /* events past the campaign's position (none relayed yet: no row) */ \
            WHERE f.last_seq > coalesce(r.relayed_seq, 0) \
              /* free, lapsed, or ours */ \
              AND (r.lease_until IS NULL OR r.lease_until < now() OR r.holder = $1) \
              /* no replica with a smaller id relays */ \
              AND (l.holder IS NULL OR l.holder >= $1) \
              /* the one campaign asked for, if one is */ \
              AND ($4::text IS NULL OR f.campaign_id = $4) \
            ORDER BY f.campaign_id LIMIT $3 \
         ), taken AS ( \
           INSERT INTO relay_positions AS r (campaign_id, holder, lease_until) \
           SELECT campaign_id, $1, now() + make_interval(secs => $2) FROM pending \
            /* not ours yet, or ours with less than half the lease left */ \
            WHERE holder IS DISTINCT FROM $1 OR lease_until < now() + make_interval(secs => $2 / 2) \
           ON CONFLICT (campaign_id) DO UPDATE \
              SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until \
            /* another replica may have taken it since this statement's snapshot */ \
            WHERE r.lease_until IS NULL OR r.lease_until < now() OR r.holder = $1 \
           RETURNING r.campaign_id, r.relayed_seq, r.subject_seq \
         ) \
         SELECT campaign_id, relayed_seq, subject_seq FROM taken \
         UNION ALL \
         /* ours, with more than half the lease left: nobody else may take it meanwhile */ \
         SELECT campaign_id, relayed_seq, subject_seq FROM pending \
          WHERE holder = $1 AND lease_until >= now() + make_interval(secs => $2 / 2)",
    )
    .bind(holder) // $1
    .bind(lease.as_secs_f64()) // $2
    .bind(limit) // $3
    .bind(only) // $4
    .fetch_all(conn)
    .await?)
}

/// Up to `limit` campaigns whose feed has events the relay has not published (read only: the campaigns to
/// [`claim`] one by one, under `--single-campaign-transactions`).
pub async fn unrelayed_campaigns(conn: &mut Conn, limit: i64) -> AppResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT f.campaign_id FROM feed_heads f \
           LEFT JOIN relay_positions r ON r.campaign_id = f.campaign_id \
          /* events past the campaign's position */ \
          WHERE f.last_seq > coalesce(r.relayed_seq, 0) \
          ORDER BY f.campaign_id LIMIT $1",
    )
    .bind(limit) // $1
    .fetch_all(conn)
    .await?)
}

/// An event the relay publishes next, with its campaign.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unrelayed {
    pub campaign_id: String,
    #[sqlx(flatten)]
    pub event: AssignmentEvent,
}

/// The numbered events after each position, at most `limit` per campaign: one read for every campaign a
/// pass relays. Each campaign's are reached by its key (campaign, feed number), so a kept plan stays bounded.
pub async fn unrelayed(
    conn: &mut Conn,
    positions: &[Claimed],
    limit: i64,
) -> AppResult<Vec<Unrelayed>> {
    let campaign_ids: Vec<&str> = positions.iter().map(|p| p.campaign_id.as_str()).collect();
    let relayed: Vec<i64> = positions.iter().map(|p| p.relayed_seq).collect();
    let sql = format!(
        "SELECT p.campaign_id, {EVENT_COLUMNS} \
           FROM unnest($1::text[], $2::bigint[]) AS p(campaign_id, relayed_seq) \
           CROSS JOIN LATERAL ( \
             SELECT * FROM assignment_events x \
              /* the campaign's events past its position, in feed order */ \
              WHERE x.campaign_id = p.campaign_id AND x.seq > p.relayed_seq \
              ORDER BY x.seq LIMIT $3) AS e"
    );
    Ok(sqlx::query_as(&sql)
        .bind(&campaign_ids) // $1
        .bind(&relayed) // $2
        .bind(limit) // $3
        .fetch_all(conn)
        .await?)
}

/// Moves each campaign's position to where JetStream acknowledged it and renews its lease, for those
/// `holder` still holds; returns those. A campaign left out was taken by another replica.
pub async fn advance(
    conn: &mut Conn,
    holder: &str,
    positions: &[Claimed],
    lease: Duration,
) -> AppResult<Vec<String>> {
    let campaign_ids: Vec<&str> = positions.iter().map(|p| p.campaign_id.as_str()).collect();
    let relayed: Vec<i64> = positions.iter().map(|p| p.relayed_seq).collect();
    let subject: Vec<i64> = positions.iter().map(|p| p.subject_seq).collect();
    Ok(sqlx::query_scalar(
        "UPDATE relay_positions r \
            SET relayed_seq = p.relayed_seq, subject_seq = p.subject_seq, \
                lease_until = now() + make_interval(secs => $5) \
           FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS p(campaign_id, relayed_seq, subject_seq) \
          /* each by its key, while still ours */ \
          WHERE r.campaign_id = p.campaign_id AND r.holder = $1 \
         RETURNING r.campaign_id",
    )
    .bind(holder) // $1
    .bind(&campaign_ids) // $2
    .bind(&relayed) // $3
    .bind(&subject) // $4
    .bind(lease.as_secs_f64()) // $5
    .fetch_all(conn)
    .await?)
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
