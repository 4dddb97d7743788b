//! No statement joins two sets that both grow with its batch: keyed transactions (`Store::begin_keyed`)
//! have no hash or merge join, so such a join is a nested loop that compares every row of one with every
//! row of the other. A private PostgreSQL explains every statement it runs (`auto_explain`, with row counts)
//! while batches of a thousand conversations go through bulk assignment, a return to the queue and a drain,
//! and a thousand triggers that all find nobody and queue; no join may then have turned away more rows than
//! a few times the batch.

use std::time::Duration;

use assignment_service::embedded_pg::EmbeddedPostgres;
use assignment_service::pb;

use crate::harness::*;

const CONVERSATIONS: i64 = 1_000;

/// Rows a join may turn away at most: a few times the batch, where a join of two batch-sized sets turns
/// away about the batch squared (a million here).
const REMOVED_AT_MOST: i64 = 20 * CONVERSATIONS;

#[tokio::test]
async fn no_statement_compares_every_row_of_a_batch_with_every_other() {
    let dir = std::env::temp_dir().join(format!("linear-joins-{}", uuid::Uuid::new_v4()));
    let postgres = EmbeddedPostgres::start(
        &dir,
        &[
            ("shared_preload_libraries", "auto_explain"),
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_analyze", "on"),
            ("auto_explain.log_timing", "off"),
            ("auto_explain.log_format", "json"),
            ("fsync", "off"),
            ("synchronous_commit", "off"),
        ],
    )
    .expect("a private PostgreSQL");
    // Every trigger of the queueing phase in flight at once, from one caller.
    let flags = [
        NO_SWEEP[0],
        NO_SWEEP[1],
        "--max-calls-per-caller",
        "2000",
        "--max-concurrent-calls",
        "2000",
    ];
    let app = TestApp::start_with(&config(&postgres.url("postgres"), &flags)).await;
    app.team_in(CAMPAIGN, &["o1", "o2"]).await;
    let settings = pb::UpdateInboxSettingsRequest {
        auto_assign_enabled: Some(true),
        on_unavailable: pb::OnUnavailable::ReturnToQueue.into(),
        ..Default::default()
    };
    app.update_settings("admin", settings).await;
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
         SELECT $1, 'c' || lpad(n::text, 5, '0'), 'm' || n FROM generate_series(1, $2) AS n",
    )
    .bind(CAMPAIGN)
    .bind(CONVERSATIONS)
    .execute(app.store.pool())
    .await
    .unwrap();
    let ids: Vec<String> = (1..=CONVERSATIONS).map(|n| format!("c{n:05}")).collect();

    // Bulk: every conversation assigned, half to each organizer.
    bulk_assign_round_robin(&app, &ids).await;
    // A return to the queue: o1 goes away and their half waits; then a drain hands it to o2.
    app.set_availability("o1", pb::Availability::Away).await;
    app.auto_assign("new").await;
    // Triggers that all queue: with nobody available, concurrent triggers coalesce into batches that
    // queue every conversation they carry.
    app.set_availability("o2", pb::Availability::Away).await;
    let client = app.assignments().await;
    let triggers = (1..=CONVERSATIONS).map(|n| {
        let mut client = client.clone();
        async move {
            let request = system(CAMPAIGN, auto_assign_request(&format!("q{n:05}")));
            client
                .auto_assign_conversation(request)
                .await
                .unwrap()
                .into_inner()
        }
    });
    let outcomes = futures_util::future::join_all(triggers).await;
    assert!(
        outcomes
            .iter()
            .all(|answer| answer.outcome() == pb::AutoAssignOutcome::Queued),
        "nobody was available, yet a trigger did not queue its conversation"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(app);

    let log = std::fs::read_to_string(dir.with_extension("log")).expect("the server's log");
    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
    // Each logged plan starts with its statement's text; its nodes follow.
    let plans: Vec<&str> = log.split("\"Query Text\": ").skip(1).collect();
    assert!(
        plans.len() > 20,
        "only {} plans were logged: is auto_explain on?",
        plans.len()
    );
    let (worst, statement) = plans
        .iter()
        .map(|plan| {
            (
                removed_by_joins(plan),
                plan.lines().next().unwrap_or_default(),
            )
        })
        .max_by_key(|(removed, _)| *removed)
        .unwrap_or_default();
    assert!(
        worst <= REMOVED_AT_MOST,
        "a join turned away {worst} rows for a batch of {CONVERSATIONS}: it compares every row of one \
         batch-sized set with every row of another, in {statement}"
    );
}

/// The most rows one join of the plan turned away.
fn removed_by_joins(plan: &str) -> i64 {
    plan.split("\"Rows Removed by Join Filter\": ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<i64>().ok()
        })
        .max()
        .unwrap_or(0)
}
