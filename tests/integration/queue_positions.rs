//! The queue positions a QUEUED auto-assign answer carries, below gRPC on a fresh schema: exact (how many
//! entries of the campaign's queue come at or before each, whatever other campaigns hold), and read in one
//! pass over the queue's front however many conversations a batch asks about.

use std::time::Duration;

use assignment_service::store::{Store, waiting};

use crate::harness::*;

/// Waiting conversations in the campaign, each with its queue key: every third one of `SECOND` beside them.
const WAITING: i64 = 6_000;

/// A fresh schema on one connection (the statistics read are that backend's), with `WAITING` conversations
/// queued in `CAMPAIGN` in order `q-000000` first, and as many in `SECOND` interleaved with them.
async fn queue() -> Store {
    let store = Store::connect(&fresh_schema_url().await, 1, Duration::from_secs(30))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    for campaign in [CAMPAIGN, SECOND] {
        sqlx::query(
            "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
             SELECT $1, 'q-' || lpad(n::text, 6, '0'), 'm' || n FROM generate_series(0, $2 - 1) AS n",
        )
        .bind(campaign)
        .bind(WAITING)
        .execute(store.pool())
        .await
        .unwrap();
        // Keys out of insertion order (n * 7 mod a prime), so no order of the rows on disk helps.
        sqlx::query(
            "INSERT INTO waiting_conversations (campaign_id, conversation_id, position) \
             SELECT $1, 'q-' || lpad(n::text, 6, '0'), \
                    CASE WHEN $1 = $3 THEN (n * 7919) % 10007 ELSE n END \
               FROM generate_series(0, $2 - 1) AS n",
        )
        .bind(campaign)
        .bind(WAITING)
        .bind(CAMPAIGN)
        .execute(store.pool())
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    store
}

const SECOND: &str = "camp-2";

/// Each conversation's place, counted the slow, obvious way.
async fn expected(store: &Store, ids: &[&str]) -> Vec<(String, i64)> {
    let mut places = Vec::new();
    for id in ids {
        let place: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM waiting_conversations a \
                      WHERE a.campaign_id = w.campaign_id AND a.position <= w.position) \
               FROM waiting_conversations w WHERE w.campaign_id = $1 AND w.conversation_id = $2",
        )
        .bind(CAMPAIGN)
        .bind(id)
        .fetch_optional(store.pool())
        .await
        .unwrap();
        if let Some(place) = place {
            places.push(((*id).to_owned(), place));
        }
    }
    places.sort();
    places
}

async fn positions(store: &Store, ids: &[&str]) -> Vec<(String, i64)> {
    let mut conn = store.acquire().await.unwrap();
    let mut places: Vec<(String, i64)> = waiting::positions(&mut conn, CAMPAIGN, ids)
        .await
        .unwrap()
        .into_iter()
        .collect();
    places.sort();
    places
}

#[tokio::test]
async fn a_position_counts_the_campaigns_queue_at_or_before_each_conversation() {
    let store = queue().await;
    let ids = ["q-000000", "q-000001", "q-002500", "q-005999", "missing"];
    let places = positions(&store, &ids).await;
    assert_eq!(places, expected(&store, &ids).await);
    assert_eq!(places.len(), 4, "one not waiting has no place");
    assert_eq!(places[0], ("q-000000".to_owned(), 1), "key 0 is the front");
    // Others' queues do not count: the second campaign's keys run 0.. beside this one's.
    let last = places.iter().map(|(_, p)| *p).max().unwrap();
    assert!(last <= WAITING, "{last}");
}

#[tokio::test]
async fn a_batchs_positions_read_the_queue_once_however_many_it_asks_about() {
    let store = queue().await;
    // The back of the queue: the highest keys.
    let back: Vec<String> = sqlx::query_scalar(
        "SELECT conversation_id FROM waiting_conversations WHERE campaign_id = $1 \
          ORDER BY position DESC LIMIT 32",
    )
    .bind(CAMPAIGN)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let back: Vec<&str> = back.iter().map(String::as_str).collect();
    positions(&store, &back[..1]).await;
    let before = pages_touched(&store).await;
    positions(&store, &back[..1]).await;
    let one = pages_touched(&store).await - before;
    let places = positions(&store, &back).await;
    let thirty_two = pages_touched(&store).await - before - one;
    assert_eq!(places, expected(&store, &back).await);
    assert!(
        thirty_two <= 4 * one,
        "32 positions read {thirty_two} pages, one read {one}: the queue's front is read once per batch \
         (with a lookup by key per conversation), not once per conversation (about 32 times one)"
    );
}
