//! Silence timers: how late 10,000 pending timers fire, and the cost per fired timer beside PostgreSQL
//! doing the same work in one statement.
//!
//! `cargo bench --bench reply_timers`: the server runs in this process with its default flags (its agenda
//! of timers looked at every 250 ms, `--reply-timer-interval`). Three kinds of campaign, each with auto-assignment on,
//! 10 organizers who may reply to everything, and `reply_within_seconds` set through UpdateInboxSettings
//! (REASSIGN, the default):
//!
//! - lateness: TIMER_CAMPAIGNS campaigns (default 1) share TIMER_CONVERSATIONS (default 10,000) open
//!   conversations, seeded set-based straight into `conversations` (held round-robin by the organizers,
//!   `awaiting_reply_since` set), whose due times are spread evenly over TIMER_SPREAD_SECONDS (default 10)
//!   starting TIMER_LEAD_SECONDS (default 3) after the seeding statement. The organizers are AVAILABLE, so
//!   every fired conversation is drained to another organizer, whose own timer then runs (the service's
//!   whole path, re-fires included). A timer's lateness is the `occurred_at` of its holder's UNASSIGN event
//!   with cause REPLY_OVERDUE (the firing transaction's start) minus its due time, `greatest(
//!   awaiting_reply_since, assigned_at) + reply_within_seconds` as seeded.
//! - burst: one campaign with TIMER_CONVERSATIONS timers all due at the same instant, its organizers AWAY
//!   (the fired conversations stay queued: only the timers' own work). Timed from the due instant until
//!   every conversation is seen fired (`lapsed_by` filled, polled every 20 ms): the service's cost per
//!   fired timer.
//! - set-based SQL: one campaign with the same seed, all already due, and no timer setting (the service
//!   leaves it alone); one statement does the timers' work (lock the due conversations, unassign them,
//!   append the holder to `lapsed_by`, queue them at the front, UNASSIGN + QUEUED events, the waiting flag).
//!
//! Every seeded holder's timer must fire exactly once (one REPLY_OVERDUE UNASSIGN from that holder per
//! conversation), no holder's timer twice for one wait, and none early; the bench panics otherwise.
//! TIMER_REPLY_WITHIN_SECONDS (default 5) is the campaigns' `reply_within_seconds`;
//! TIMER_MAX_OVERDUE_REASSIGNMENTS (unset: the service's default, 2) caps the re-fires of the lateness run
//! (0: each conversation fires once). TIMER_TIMEOUT_SECONDS (default 300) bounds each wait. Uses
//! DATABASE_URL when set, otherwise a private, durable PostgreSQL under target/.

mod common;

use std::time::{Duration, Instant};

use assignment_service::pb;
use assignment_service::store::Store;
use assignment_service::store::notices::TIMED_WORK_CHANNEL;
use chrono::{DateTime, Utc};
use common::{
    BenchSchema, connect, database, env_or, organizer_ids, percentile_ms, seed_campaign,
    set_availability, settle, start_server, update_settings,
};
use tonic::transport::Channel;

const ORGANIZERS: usize = 10;
/// How often the bench looks for fired timers.
const POLL: Duration = Duration::from_millis(20);

struct Params {
    count: usize,
    campaigns: usize,
    spread: f64,
    lead: f64,
    within: i32,
    max_reassignments: Option<i32>,
    timeout: Duration,
}

impl Params {
    fn from_env() -> Self {
        Self {
            count: env_or("TIMER_CONVERSATIONS", 10_000),
            campaigns: env_or("TIMER_CAMPAIGNS", 1),
            spread: env_or("TIMER_SPREAD_SECONDS", 10.0),
            lead: env_or("TIMER_LEAD_SECONDS", 3.0),
            within: env_or("TIMER_REPLY_WITHIN_SECONDS", 5),
            max_reassignments: std::env::var("TIMER_MAX_OVERDUE_REASSIGNMENTS")
                .ok()
                .map(|s| s.parse().expect("TIMER_MAX_OVERDUE_REASSIGNMENTS")),
            timeout: Duration::from_secs(env_or("TIMER_TIMEOUT_SECONDS", 300)),
        }
    }
}

/// The seeded timers, with their holders and due times as seeded (firing moves `assigned_at`).
const CREATE_DUE: &str = "CREATE TABLE bench_due (campaign_id text, conversation_id text, holder_id text, \
                          due_at timestamptz, PRIMARY KEY (campaign_id, conversation_id))";

/// `count` open conversations spread round-robin over `campaigns`, held round-robin by the organizers,
/// their member waiting since `reply_within` before their due time; due times evenly spread over `spread`
/// seconds from `lead` seconds after this statement's start (negative: already due). The assignment is
/// older than the wait, so the wait's start decides. Organizer loads follow through the statement trigger.
/// Returns the first due time.
async fn seed_timers(
    store: &Store,
    campaigns: &[String],
    count: usize,
    lead: f64,
    spread: f64,
    within: i32,
) -> DateTime<Utc> {
    let mut tx = store.pool().begin().await.unwrap();
    let first_due: DateTime<Utc> = sqlx::query_scalar("SELECT now() + make_interval(secs => $1)")
        .bind(lead)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id, assignee_id, assigned_at, \
                                    assigned_by, awaiting_reply_since) \
         SELECT k.campaign_id, k.campaign_id || '-' || lpad((n / $3)::text, 6, '0'), 'member-' || n, \
                'org-' || lpad(((n / $3) % $4)::text, 2, '0'), \
                d.due_at - make_interval(secs => $6 + 60), 'admin', d.due_at - make_interval(secs => $6) \
           FROM generate_series(0, $2 - 1) AS n \
          CROSS JOIN LATERAL (SELECT ($1::text[])[(1 + n % $3)::int] AS campaign_id) AS k \
          CROSS JOIN LATERAL (SELECT $5 + make_interval(secs => $7 * n / $2) AS due_at) AS d",
    )
    .bind(campaigns) // $1
    .bind(count as i64) // $2
    .bind(campaigns.len() as i64) // $3
    .bind(ORGANIZERS as i64) // $4
    .bind(first_due) // $5
    .bind(f64::from(within)) // $6
    .bind(spread) // $7
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO bench_due (campaign_id, conversation_id, holder_id, due_at) \
         SELECT campaign_id, conversation_id, assignee_id, \
                greatest(awaiting_reply_since, assigned_at) + make_interval(secs => $2) \
           FROM conversations WHERE campaign_id = ANY($1)",
    )
    .bind(campaigns)
    .bind(f64::from(within))
    .execute(&mut *tx)
    .await
    .unwrap();
    // Told with the commit, as the service's own writes tell it (`store::notices`): the replicas' agendas
    // learn of timers from the commit that starts them.
    let schema = store.schema().await.unwrap();
    for campaign in campaigns {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(TIMED_WORK_CHANNEL)
            .bind(format!("{schema}/{campaign}"))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    sqlx::query("ANALYZE conversations")
        .execute(store.pool())
        .await
        .unwrap();
    first_due
}

/// Seconds from now (the database's clock) to `at`; negative when past.
async fn seconds_until(store: &Store, at: DateTime<Utc>) -> f64 {
    sqlx::query_scalar("SELECT extract(epoch FROM $1 - clock_timestamp())::float8")
        .bind(at)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Panics unless the seeding left time before the first timer is due.
async fn assert_not_due_yet(store: &Store, first_due: DateTime<Utc>) -> f64 {
    let margin = seconds_until(store, first_due).await;
    assert!(
        margin > 0.0,
        "the first timer was due {:.2} s before the seeding ended: raise TIMER_LEAD_SECONDS",
        -margin
    );
    margin
}

/// Sleeps until `at` on the database's clock.
async fn sleep_until(store: &Store, at: DateTime<Utc>) {
    let left = seconds_until(store, at).await;
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
}

/// How many of the campaigns' conversations have fired at least once (a holder is in `lapsed_by`; nothing
/// here replies, so it only grows).
async fn fired(store: &Store, campaigns: &[String]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM conversations WHERE campaign_id = ANY($1) AND cardinality(lapsed_by) > 0",
    )
    .bind(campaigns)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Polls until all `count` conversations fired; returns the seconds since `since`.
async fn wait_fired(
    store: &Store,
    campaigns: &[String],
    count: usize,
    since: Instant,
    timeout: Duration,
) -> f64 {
    loop {
        let n = fired(store, campaigns).await;
        let now = since.elapsed();
        if n >= count as i64 {
            return now.as_secs_f64();
        }
        assert!(
            now < timeout,
            "{n} of {count} timers fired after {timeout:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Each seeded timer's lateness in microseconds (its holder's REPLY_OVERDUE UNASSIGN minus its due time),
/// sorted. Panics unless every seeded holder's timer fired exactly once, none early, and no holder's timer
/// fired twice for one conversation.
async fn lateness_us(store: &Store, campaigns: &[String], count: usize) -> Vec<u64> {
    let not_once: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bench_due d \
          WHERE d.campaign_id = ANY($1) AND (SELECT count(*) FROM assignment_events e \
                  WHERE e.campaign_id = d.campaign_id AND e.conversation_id = d.conversation_id \
                    AND e.action = 'UNASSIGN' AND e.cause = 'REPLY_OVERDUE' \
                    AND e.from_user_id = d.holder_id) <> 1",
    )
    .bind(campaigns)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(not_once, 0, "seeded timers that did not fire exactly once");
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM assignment_events \
          WHERE campaign_id = ANY($1) AND action = 'UNASSIGN' AND cause = 'REPLY_OVERDUE' \
          GROUP BY campaign_id, conversation_id, from_user_id HAVING count(*) > 1) AS t",
    )
    .bind(campaigns)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(twice, 0, "a holder's timer fired twice for one wait");
    let late: Vec<i64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM e.occurred_at - d.due_at) * 1e6)::int8 \
           FROM bench_due d JOIN assignment_events e \
             ON e.campaign_id = d.campaign_id AND e.conversation_id = d.conversation_id \
            AND e.action = 'UNASSIGN' AND e.cause = 'REPLY_OVERDUE' AND e.from_user_id = d.holder_id \
          WHERE d.campaign_id = ANY($1)",
    )
    .bind(campaigns)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(late.len(), count);
    let mut late: Vec<u64> = late
        .into_iter()
        .map(|us| u64::try_from(us).unwrap_or_else(|_| panic!("a timer fired {us} µs early")))
        .collect();
    late.sort_unstable();
    late
}

/// REPLY_OVERDUE UNASSIGN events of the campaigns, all holders (re-fires included).
async fn all_fires(store: &Store, campaigns: &[String]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM assignment_events \
          WHERE campaign_id = ANY($1) AND action = 'UNASSIGN' AND cause = 'REPLY_OVERDUE'",
    )
    .bind(campaigns)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// How many transactions fired the campaigns' timers (all holders): the distinct `occurred_at` of their
/// REPLY_OVERDUE UNASSIGN events, each a firing transaction's start.
async fn firing_transactions(store: &Store, campaigns: &[String]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT occurred_at) FROM assignment_events \
          WHERE campaign_id = ANY($1) AND action = 'UNASSIGN' AND cause = 'REPLY_OVERDUE'",
    )
    .bind(campaigns)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// The timers' work straight on PostgreSQL, in one statement: the campaign's open, held, unanswered
/// conversations whose holder has not let this wait lapse and whose reply was due `$2` seconds after the
/// later of the wait's start and the assignment are locked in id order, unassigned with the holder
/// appended to `lapsed_by`, their holders' loads lowered, queued ahead of everything waiting (on the
/// campaign's queue clock), recorded (UNASSIGN, then QUEUED, `auto`, cause REPLY_OVERDUE), and the
/// campaign's waiting flag set. Returns how many fired.
const SQL_FIRE: &str = "\
WITH due AS ( \
       SELECT c.conversation_id, c.assignee_id, c.clock FROM conversations c \
        WHERE c.campaign_id = $1 AND c.awaiting_reply_since IS NOT NULL AND c.assignee_id IS NOT NULL \
          AND c.status = 'OPEN' AND NOT (c.assignee_id = ANY (c.lapsed_by)) \
          AND greatest(c.awaiting_reply_since, c.assigned_at) <= now() - make_interval(secs => $2) \
        ORDER BY c.conversation_id COLLATE \"C\" FOR UPDATE), \
     returned AS ( \
       UPDATE conversations c SET assignee_id = NULL, assigned_at = NULL, assigned_by = NULL, \
              lapsed_by = array_append(c.lapsed_by, due.assignee_id), \
              version = c.version + 1, updated_at = now(), \
              clock = 1 + greatest(due.clock, \
                                   (SELECT event_clock FROM inbox_settings WHERE campaign_id = $1)) \
         FROM due WHERE c.campaign_id = $1 AND c.conversation_id = due.conversation_id \
       RETURNING c.conversation_id, due.assignee_id AS holder_id, c.clock AS stamp), \
     loads AS ( \
       INSERT INTO organizer_load_changes (campaign_id, user_id, delta) \
       SELECT $1, holder_id, -count(*) FROM returned GROUP BY holder_id), \
     flagged AS ( \
       UPDATE inbox_settings s SET has_waiting = true, \
              queue_clock = greatest((extract(epoch FROM now()) * 1000000)::bigint, s.queue_clock + 1) \
                            + r.n - 1, \
              event_clock = greatest(s.event_clock, r.stamp) \
         FROM (SELECT count(*) AS n, max(stamp) AS stamp FROM returned) AS r \
        WHERE s.campaign_id = $1 AND r.n > 0 \
       RETURNING s.queue_clock - r.n + 1 AS first_arrival), \
     queued AS ( \
       INSERT INTO waiting_conversations (campaign_id, conversation_id, position) \
       SELECT $1, r.conversation_id, -(r.arrival * 1000 + r.arrival % 1000) \
         FROM (SELECT conversation_id, f.first_arrival + row_number() OVER (ORDER BY conversation_id DESC) - 1 \
                      AS arrival FROM returned CROSS JOIN flagged f) AS r \
       ON CONFLICT (campaign_id, conversation_id) DO NOTHING \
       RETURNING conversation_id), \
     events AS ( \
       INSERT INTO assignment_events (campaign_id, conversation_id, action, from_user_id, source, cause, stamp) \
       SELECT $1, e.conversation_id, e.action, e.from_user_id, 'AUTO', 'REPLY_OVERDUE', e.stamp FROM ( \
         SELECT conversation_id, 'UNASSIGN' AS action, holder_id AS from_user_id, 0 AS step, stamp FROM returned \
         UNION ALL \
         SELECT q.conversation_id, 'QUEUED', NULL, 1, r.stamp \
           FROM queued q JOIN returned r ON r.conversation_id = q.conversation_id) AS e \
        ORDER BY e.conversation_id, e.step) \
SELECT count(*) FROM returned";

/// Runs [`SQL_FIRE`] in a transaction of its own; returns the seconds it took, begin to commit.
async fn sql_fire(store: &Store, campaign: &str, count: usize, within: i32) -> f64 {
    let started = Instant::now();
    let mut tx = store.pool().begin().await.unwrap();
    let n: i64 = sqlx::query_scalar(SQL_FIRE)
        .bind(campaign)
        .bind(f64::from(within))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(n, count as i64, "the SQL fired every timer");
    seconds
}

/// A campaign as [`seed_campaign`] makes it, with the silence timer set (and the re-fire cap, if given).
async fn timed_campaign(
    channel: &Channel,
    campaign: &str,
    within: i32,
    max_reassignments: Option<i32>,
) {
    seed_campaign(channel, campaign, ORGANIZERS).await;
    update_settings(
        channel,
        campaign,
        pb::UpdateInboxSettingsRequest {
            reply_within_seconds: Some(within),
            max_overdue_reassignments: max_reassignments,
            ..Default::default()
        },
    )
    .await;
}

/// One row of the table.
struct Row {
    what: String,
    seconds: f64,
    late_us: Vec<u64>,
    /// Whether its seconds are the cost of the work (not a window of due times).
    cost: bool,
}

fn print_table(count: usize, rows: &[Row], sql: &Row) {
    let sql_per_1000 = sql.seconds * 1e6 / count as f64;
    println!(
        "| path | timers | seconds | timers/s | lateness p50 / p99 / max (ms) | ms per 1,000 timers | x set-based SQL |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows.iter().chain(std::iter::once(sql)) {
        let per_1000 = row.seconds * 1e6 / count as f64;
        let late = if row.late_us.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.0} / {:.0} / {:.0}",
                percentile_ms(&row.late_us, 0.50),
                percentile_ms(&row.late_us, 0.99),
                percentile_ms(&row.late_us, 1.0)
            )
        };
        let cost = if row.cost {
            format!("{per_1000:.1} | {:.1}", per_1000 / sql_per_1000)
        } else {
            "- | -".to_string()
        };
        println!(
            "| {} | {count} | {:.2} | {:.0} | {late} | {cost} |",
            row.what,
            row.seconds,
            count as f64 / row.seconds,
        );
    }
}

#[tokio::main]
async fn main() {
    let p = Params::from_env();
    let (server_url, _cluster) = database();
    let bench_schema = BenchSchema::create(&server_url, "bench_reply_timers").await;
    let url = bench_schema.url.clone();
    let addr = start_server(&url, &[]).await;
    let channel = connect(&addr).await;
    let store = Store::connect(&url, 2, Duration::from_secs(120))
        .await
        .unwrap();
    sqlx::query(CREATE_DUE).execute(store.pool()).await.unwrap();

    let spread_campaigns: Vec<String> = (0..p.campaigns).map(|i| format!("timers-{i}")).collect();
    let burst = vec!["timers-burst".to_string()];
    let sql_campaign = "timers-sql";
    for campaign in &spread_campaigns {
        timed_campaign(&channel, campaign, p.within, p.max_reassignments).await;
    }
    timed_campaign(&channel, &burst[0], p.within, None).await;
    for organizer in organizer_ids(ORGANIZERS) {
        set_availability(&channel, &burst[0], &organizer, pb::Availability::Away).await;
    }
    // The baseline's campaign runs no timer (the service leaves it to the SQL) and no auto-assignment.
    seed_campaign(&channel, sql_campaign, ORGANIZERS).await;
    update_settings(
        &channel,
        sql_campaign,
        pb::UpdateInboxSettingsRequest {
            auto_assign_enabled: Some(false),
            ..Default::default()
        },
    )
    .await;

    println!(
        "Silence timers: {} timers, reply within {} s, {ORGANIZERS} organizers, agenda looked at every 250 ms\n",
        p.count, p.within
    );

    // Lateness: due times spread over the window, the whole path running.
    settle(&store).await;
    let seeding = Instant::now();
    let first_due = seed_timers(
        &store,
        &spread_campaigns,
        p.count,
        p.lead,
        p.spread,
        p.within,
    )
    .await;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let margin = assert_not_due_yet(&store, first_due).await;
    sleep_until(&store, first_due).await;
    let started = Instant::now();
    let spread_seconds = wait_fired(&store, &spread_campaigns, p.count, started, p.timeout).await;
    let spread_late = lateness_us(&store, &spread_campaigns, p.count).await;
    let spread_fires = all_fires(&store, &spread_campaigns).await;
    let spread_transactions = firing_transactions(&store, &spread_campaigns).await;
    // Stop the re-fires before the next run.
    for campaign in &spread_campaigns {
        update_settings(
            &channel,
            campaign,
            pb::UpdateInboxSettingsRequest {
                reply_within_seconds: Some(0),
                ..Default::default()
            },
        )
        .await;
    }
    println!(
        "lateness run: seeded in {seed_seconds:.2} s set-based ({} campaign(s)), first due {margin:.2} s \
         after; due over {:.0} s; all {} seen fired {spread_seconds:.2} s after the first due; \
         {spread_fires} REPLY_OVERDUE unassigns in all (re-fires of later holders included) by \
         {spread_transactions} firing transactions",
        p.campaigns, p.spread, p.count
    );

    // Burst: every timer due at one instant, nobody to drain to.
    settle(&store).await;
    let due = seed_timers(&store, &burst, p.count, p.lead, 0.0, p.within).await;
    assert_not_due_yet(&store, due).await;
    sleep_until(&store, due).await;
    let started = Instant::now();
    let burst_seconds = wait_fired(&store, &burst, p.count, started, p.timeout).await;
    let burst_late = lateness_us(&store, &burst, p.count).await;
    assert_eq!(all_fires(&store, &burst).await, p.count as i64);
    let burst_transactions = firing_transactions(&store, &burst).await;

    // Set-based SQL: the same seed, all due already.
    let sql_campaigns = vec![sql_campaign.to_string()];
    seed_timers(&store, &sql_campaigns, p.count, -1.0, 0.0, p.within).await;
    settle(&store).await;
    let sql_seconds = sql_fire(&store, sql_campaign, p.count, p.within).await;
    lateness_us(&store, &sql_campaigns, p.count).await;
    println!(
        "burst: {} timers due at one instant, all seen fired after {burst_seconds:.2} s by \
         {burst_transactions} firing transactions; set-based SQL: {sql_seconds:.3} s, begin to commit\n",
        p.count
    );

    let rows = [
        Row {
            what: format!(
                "service, due spread over {:.0} s, drained to AVAILABLE organizers",
                p.spread
            ),
            seconds: spread_seconds,
            late_us: spread_late,
            cost: false,
        },
        Row {
            what: "service, all due at once, organizers AWAY".to_string(),
            seconds: burst_seconds,
            late_us: burst_late,
            cost: true,
        },
    ];
    let sql = Row {
        what: "set-based SQL, one statement".to_string(),
        seconds: sql_seconds,
        late_us: Vec::new(),
        cost: true,
    };
    print_table(p.count, &rows, &sql);
    println!(
        "\nseconds: from the first due time until every timer is seen fired (service), begin to commit (SQL); \
         the spread row's include the {:.0} s window of due times; lateness: the firing transaction's start \
         (its events' occurred_at) minus the due time",
        p.spread
    );

    store.pool().close().await;
    bench_schema.drop_schema().await;
}
