//! Kept plans stay bounded whatever the statistics: the plans of a bulk batch and an auto-assign batch made
//! while the tables were empty still reach each conversation by its key after the campaign grows to 100,000
//! conversations, with no ANALYZE in between (the test cluster, like a busy database between autovacuum
//! runs, never refreshes statistics by itself).

use assignment_service::pb;

use crate::harness::*;

const GROWN: i64 = 100_000;

/// One pooled connection: every call of the server, and every read of the test, runs on the backend that
/// made (and keeps) the plans.
async fn one_connection_campaign() -> TestApp {
    let app = TestApp::start_configured(&["--pool-size", "1", NO_SWEEP[0], NO_SWEEP[1]]).await;
    app.admin("admin").await;
    for org in ["o1", "o2"] {
        app.organizer(org).await;
    }
    app.group("admin", "Team", &["o1", "o2"], true, scope_all())
        .await;
    app.enable_auto_assign().await;
    app
}

fn ids(prefix: &str, range: std::ops::Range<i64>) -> Vec<String> {
    range.map(|n| format!("{prefix}-{n:06}")).collect()
}

#[tokio::test]
async fn bulk_and_auto_assign_batches_stay_bounded_after_the_campaign_grows_without_analyze() {
    let app = one_connection_campaign().await;
    // The plans are made and kept while the tables are (nearly) empty.
    for id in ["first-1", "first-2"] {
        app.conversation(id, &[]).await;
    }
    bulk_assign_round_robin(&app, &["first-1".into(), "first-2".into()]).await;
    assert_eq!(
        app.auto_assign("first-3").await.outcome(),
        pb::AutoAssignOutcome::Assigned
    );

    // An import: the campaign grows to 100,000 conversations, the statistics stay those of the empty table.
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
         SELECT $1, 'imported-' || lpad(n::text, 6, '0'), 'm' || n FROM generate_series(0, $2 - 1) AS n",
    )
    .bind(CAMPAIGN)
    .bind(GROWN)
    .execute(app.store.pool())
    .await
    .unwrap();

    // A bulk batch reaches its 20 conversations (and their queue entries) by key: the pages it reads, its
    // writes and their history included, grow with the batch (about 55 a conversation), not with the
    // campaign's 100,000 conversations (a scan of the campaign reads thousands of pages, and hundreds a
    // conversation when each lookup does).
    let batch = ids("imported", 1_000..1_020);
    let before = pages_touched(&app.store).await;
    bulk_assign_round_robin(&app, &batch).await;
    let bulk_pages = pages_touched(&app.store).await - before;
    assert!(
        bulk_pages < 100 * batch.len() as i64,
        "a bulk batch of {} conversations touched {bulk_pages} pages",
        batch.len()
    );

    // So does an auto-assign batch (about 90 pages for one trigger; 700 when a lookup scans the campaign).
    let before = pages_touched(&app.store).await;
    assert_eq!(
        app.auto_assign("imported-002000").await.outcome(),
        pb::AutoAssignOutcome::Assigned
    );
    let auto_pages = pages_touched(&app.store).await - before;
    assert!(
        auto_pages < 300,
        "an auto-assign batch of one trigger touched {auto_pages} pages"
    );
}

/// Starts the campaign's silence timers (a reply within a minute), with `on_overdue` (UNSPECIFIED: the
/// default choice).
async fn time_replies(app: &TestApp, on_overdue: pb::OnReplyOverdue) {
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            reply_within_seconds: Some(60),
            on_reply_overdue: on_overdue.into(),
            ..Default::default()
        },
    )
    .await;
}

/// Seeds `count` conversations of the campaign held by o1, whose members have waited a day for a reply.
async fn overdue(app: &TestApp, prefix: &str, count: i64) {
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id, assignee_id, assigned_at, \
                                    awaiting_reply_since) \
         SELECT $1, $2 || lpad(n::text, 6, '0'), 'm', 'o1', now() - interval '1 day', \
                now() - interval '1 day' FROM generate_series(1, $3) AS n",
    )
    .bind(CAMPAIGN)
    .bind(prefix)
    .bind(count)
    .execute(app.store.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn a_backlog_of_silence_timers_costs_what_it_fires_with_statistics_of_a_small_table() {
    let app = one_connection_campaign().await;
    // Statistics taken while a handful of timers were pending, then a backlog of 5,000 falls due at once.
    overdue(&app, "few-", 10).await;
    sqlx::query("ANALYZE")
        .execute(app.store.pool())
        .await
        .unwrap();
    const BACKLOG: i64 = 5_000;
    overdue(&app, "backlog-", BACKLOG).await;
    let before = pages_touched(&app.store).await;
    time_replies(&app, pb::OnReplyOverdue::Unspecified).await;
    let mut pending = BACKLOG;
    for _ in 0..600 {
        pending = sqlx::query_scalar(
            "SELECT count(*) FROM conversations WHERE campaign_id = $1 AND cardinality(lapsed_by) = 0",
        )
        .bind(CAMPAIGN)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0, "every timer fired");
    // Firing (and draining what fired to o2) costs pages per timer; choosing the batch again for each row
    // it locks cost thousands per timer.
    let pages = pages_touched(&app.store).await - before;
    assert!(
        pages < 300 * (BACKLOG + 10),
        "firing {} timers touched {pages} pages",
        BACKLOG + 10
    );
}

/// Statistics taken while the table held many small campaigns (a thousand of one conversation each) make
/// any one campaign look like a single row; then this campaign imports 100,000 conversations held by o2
/// and a few of o1's waits lapse. Firing them must reach each by its key: a lookup of many ids at once
/// (`= ANY`) planned with those statistics reads the whole campaign.
#[tokio::test]
async fn lapsed_replies_are_reached_by_key_with_statistics_of_many_small_campaigns() {
    for lapse in [pb::OnReplyOverdue::Notify, pb::OnReplyOverdue::Reassign] {
        let app = one_connection_campaign().await;
        sqlx::raw_sql(
            "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
             SELECT 'small-' || n, 'only-' || n, 'm' FROM generate_series(1, 1000) AS n; \
             ANALYZE",
        )
        .execute(app.store.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO conversations (campaign_id, conversation_id, member_id, assignee_id, assigned_at) \
             SELECT $1, 'imported-' || lpad(n::text, 6, '0'), 'm' || n, 'o2', now() \
               FROM generate_series(1, $2) AS n",
        )
        .bind(CAMPAIGN)
        .bind(GROWN)
        .execute(app.store.pool())
        .await
        .unwrap();
        const LAPSED: i64 = 5;
        overdue(&app, "lapsed-", LAPSED).await;
        let before = pages_touched(&app.store).await;
        time_replies(&app, lapse).await;
        // Counted from their events (a count of the conversations would read the campaign itself).
        let mut fired = 0;
        for _ in 0..300 {
            fired = sqlx::query_scalar(
                "SELECT count(DISTINCT conversation_id) FROM assignment_events \
                  WHERE campaign_id = $1 AND cause = 'REPLY_OVERDUE'",
            )
            .bind(CAMPAIGN)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
            if fired == LAPSED {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(fired, LAPSED, "every timer fired ({lapse:?})");
        // A few hundred pages for the five (about 270 flagged, 830 handed on); a lookup that reads the
        // campaign's 100,000 conversations (or their index entries) costs about a thousand pages each.
        let pages = pages_touched(&app.store).await - before;
        assert!(
            pages < 300 * LAPSED,
            "firing {LAPSED} timers ({lapse:?}) touched {pages} pages"
        );
    }
}
