//! The NATS JetStream relay's positions and leases (`relay_positions`): how far each campaign's feed is
//! published, and which replica publishes it now.

use std::time::Duration;

use super::feed::EVENT_COLUMNS;
use super::{Campaigns, Conn};
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

/// A campaign with events to relay that another replica holds, or that is left to the replica relaying.
#[derive(Debug, Clone, PartialEq)]
pub struct Theirs {
    pub campaign_id: String,
    /// Who holds it (`None`: nobody does; the replica relaying is to take it).
    pub holder: Option<String>,
    /// How long the holder's lease still runs, if it does.
    pub lapses_in: Option<Duration>,
}

/// What a claim found among the campaigns it looked at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// Those this replica holds the lease of: to relay now.
    pub ours: Vec<Claimed>,
    /// Those with events it does not hold: to look at again when the lease may have lapsed.
    pub theirs: Vec<Theirs>,
    /// The replica relaying: the smallest holder whose lease runs among the campaigns looked at (this
    /// replica's included, after the claim), or the one the caller knew of (`None`: none).
    pub relaying: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    relaying: Option<String>,
    campaign_id: Option<String>,
    relayed_seq: Option<i64>,
    subject_seq: Option<i64>,
    ours: Option<bool>,
    holder: Option<String>,
    lease_left: Option<f64>,
}

/// Takes the lease of up to `limit` campaigns among `campaigns` whose feed has events the relay has not
/// published, for `lease` from now: those nobody holds and those whose holder's lease passed. Returns them,
/// with those `holder` holds already, and their positions; and those another replica holds, with when
/// their lease lapses. A lease `holder` holds is renewed only once less than half of it is left
/// (publishing renews it too: [`advance`]), so a claim of campaigns it holds writes nothing.
///
/// One replica relays at a time, by preference: the smallest holder id whose lease runs, among the
/// campaigns looked at, or `relaying` (the one the caller last learned of). Another replica takes nothing
/// while it lives, and gives up what it holds among the campaigns looked at, so the leases gather on one
/// replica (its bursts then meet no other publisher's messages in the stream) and move when it dies.
/// Nothing depends on it for correctness: every message names what must precede it.
///
/// `Campaigns::Named` reads and writes those campaigns' rows only (by their keys); `Campaigns::Every` reads
/// every campaign's lease and feed head (the relay's rare full claim).
pub async fn claim(
    conn: &mut Conn,
    holder: &str,
    lease: Duration,
    limit: i64,
    campaigns: Campaigns<'_>,
    relaying: Option<&str>,
) -> AppResult<Claims> {
    let sql = format!(
        "WITH leader AS MATERIALIZED ( \
           /* the smallest holder whose lease runs among the campaigns looked at, or the one known to relay \
              (NULL: none) */ \
           SELECT least($4::text, min(holder)) AS holder FROM relay_positions \
            WHERE lease_until >= now() AND {leases} \
         ), pending AS MATERIALIZED ( \
           SELECT f.campaign_id, r.holder, r.lease_until, \
                  coalesce(r.relayed_seq, 0) AS relayed_seq, coalesce(r.subject_seq, 0) AS subject_seq, \
                  /* free, lapsed or ours, while no replica with a smaller id relays */ \
                  (r.lease_until IS NULL OR r.lease_until < now() OR r.holder = $1) \
                    AND (l.holder IS NULL OR l.holder >= $1) AS takeable \
             FROM feed_heads f CROSS JOIN leader l \
             LEFT JOIN relay_positions r ON r.campaign_id = f.campaign_id \
            /* events past the campaign's position (none relayed yet: no row) */ \
            WHERE f.last_seq > coalesce(r.relayed_seq, 0) \
              /* the campaigns looked at */ \
              AND {heads} \
            /* those it may take first */ \
            ORDER BY takeable DESC, f.campaign_id LIMIT $3 \
         ), yielded AS ( \
           UPDATE relay_positions r SET holder = NULL, lease_until = NULL FROM leader l, pending p \
            /* ours among them, while a replica with a smaller id relays */ \
            WHERE r.campaign_id = p.campaign_id AND r.holder = $1 AND l.holder < $1 \
         ), taken AS ( \
           INSERT INTO relay_positions AS r (campaign_id, holder, lease_until) \
           SELECT campaign_id, $1, now() + make_interval(secs => $2) FROM pending \
            /* not ours yet, or ours with less than half the lease left */ \
            WHERE takeable \
              AND (holder IS DISTINCT FROM $1 OR lease_until < now() + make_interval(secs => $2 / 2)) \
           ON CONFLICT (campaign_id) DO UPDATE \
              SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until \
            /* another replica may have taken it since this statement's snapshot */ \
            WHERE r.lease_until IS NULL OR r.lease_until < now() OR r.holder = $1 \
           RETURNING r.campaign_id, r.relayed_seq, r.subject_seq \
         ), found AS ( \
           SELECT campaign_id, relayed_seq, subject_seq, true AS ours, NULL::text AS holder, \
                  NULL::float8 AS lease_left FROM taken \
           UNION ALL \
           /* ours, with more than half the lease left: nobody else may take it meanwhile */ \
           SELECT campaign_id, relayed_seq, subject_seq, true, NULL, NULL FROM pending \
            WHERE takeable AND holder = $1 AND lease_until >= now() + make_interval(secs => $2 / 2) \
           UNION ALL \
           /* the others: held by another replica (until its lease lapses), left to the one relaying, or \
              taken by another since this statement's snapshot */ \
           SELECT p.campaign_id, p.relayed_seq, p.subject_seq, false, nullif(p.holder, $1), \
                  CASE WHEN p.holder <> $1 AND p.lease_until >= now() \
                       THEN extract(epoch FROM p.lease_until - now())::float8 END \
             FROM pending p \
            WHERE (p.takeable AND p.holder = $1 \
                   AND p.lease_until >= now() + make_interval(secs => $2 / 2)) IS NOT TRUE \
              AND p.campaign_id NOT IN (SELECT campaign_id FROM taken) \
         ) \
         /* the replica relaying now (this one, if it holds a campaign and none smaller relays), even \
            when no campaign has events */ \
         SELECT least(l.holder, (SELECT $1::text FROM found WHERE ours LIMIT 1)) AS relaying, x.* \
           FROM leader l LEFT JOIN found x ON true",
        leases = campaigns.condition("campaign_id", 5),
        heads = campaigns.condition("f.campaign_id", 5),
    );
    let query = sqlx::query_as(&sql)
        .bind(holder) // $1
        .bind(lease.as_secs_f64()) // $2
        .bind(limit) // $3
        .bind(relaying); // $4
    let query = match campaigns {
        Campaigns::Named(ids) => query.bind(ids), // $5
        Campaigns::Every => query,
    };
    let rows: Vec<ClaimRow> = query.fetch_all(conn).await?;
    let mut claims = Claims {
        relaying: rows.first().and_then(|row| row.relaying.clone()),
        ..Claims::default()
    };
    for row in rows {
        let Some(campaign_id) = row.campaign_id else {
            continue;
        };
        if row.ours == Some(true) {
            claims.ours.push(Claimed {
                campaign_id,
                relayed_seq: row.relayed_seq.unwrap_or_default(),
                subject_seq: row.subject_seq.unwrap_or_default(),
            });
        } else {
            claims.theirs.push(Theirs {
                campaign_id,
                holder: row.holder,
                lapses_in: row.lease_left.map(|s| Duration::from_secs_f64(s.max(0.0))),
            });
        }
    }
    Ok(claims)
}

/// The replica relaying: the smallest holder whose lease runs, across every campaign (the full claim's
/// choice, read alone under `--single-campaign-transactions`, where each campaign is claimed on its own).
pub async fn relaying(conn: &mut Conn) -> AppResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT min(holder) FROM relay_positions WHERE lease_until >= now()")
            .fetch_one(conn)
            .await?,
    )
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

/// The campaigns whose lease `holder` holds (a replica shutting down gives them up one by one under
/// `--single-campaign-transactions`).
pub async fn held(conn: &mut Conn, holder: &str) -> AppResult<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT campaign_id FROM relay_positions WHERE holder = $1")
            .bind(holder) // $1
            .fetch_all(conn)
            .await?,
    )
}

/// Gives up the leases `holder` holds among `campaigns` (a replica shutting down); returns their campaigns.
pub async fn release(
    conn: &mut Conn,
    holder: &str,
    campaigns: Campaigns<'_>,
) -> AppResult<Vec<String>> {
    let sql = format!(
        "UPDATE relay_positions SET holder = NULL, lease_until = NULL \
          /* ours, among the campaigns named */ \
          WHERE holder = $1 AND {} \
         RETURNING campaign_id",
        campaigns.condition("campaign_id", 2)
    );
    let query = sqlx::query_scalar(&sql).bind(holder); // $1
    let query = match campaigns {
        Campaigns::Named(ids) => query.bind(ids), // $2
        Campaigns::Every => query,
    };
    Ok(query.fetch_all(conn).await?)
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
