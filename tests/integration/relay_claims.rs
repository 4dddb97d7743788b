//! The relay's claim below gRPC, on a fresh schema: a claim of named campaigns reads and takes only those,
//! reports who holds the others and until when, leaves new campaigns to the replica relaying, and gives
//! up what its replica holds when a replica with a smaller id relays.

use std::time::Duration;

use assignment_service::store::relay::{self, Claims, Theirs};
use assignment_service::store::{Campaigns, Store};

use crate::harness::*;

const LEASE: Duration = Duration::from_secs(10);

/// A fresh schema whose campaigns `c1`..`c4` each have three events no relay published.
async fn store() -> Store {
    let store = Store::connect(&fresh_schema_url().await, 2, Duration::from_secs(30))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    sqlx::query(
        "INSERT INTO feed_heads (campaign_id, last_seq) \
         SELECT 'c' || n, 3 FROM generate_series(1, 4) n",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store
}

/// `holder` holds `campaign`'s lease for `seconds` more (negative: lapsed), nothing relayed yet.
async fn held(store: &Store, campaign: &str, holder: &str, seconds: i64) {
    sqlx::query(
        "INSERT INTO relay_positions (campaign_id, holder, lease_until) \
         VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(campaign)
    .bind(holder)
    .bind(seconds as f64)
    .execute(store.pool())
    .await
    .unwrap();
}

async fn claim(store: &Store, holder: &str, named: &[&str], relaying: Option<&str>) -> Claims {
    let named: Vec<String> = named.iter().map(|c| (*c).to_owned()).collect();
    let mut conn = store.acquire().await.unwrap();
    relay::claim(
        &mut conn,
        holder,
        LEASE,
        64,
        Campaigns::Named(&named),
        relaying,
    )
    .await
    .unwrap()
}

/// Each campaign's holder, in campaign order (`None`: no row, or nobody holds it).
async fn holders(store: &Store) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT f.campaign_id, r.holder FROM feed_heads f \
           LEFT JOIN relay_positions r ON r.campaign_id = f.campaign_id ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

fn ours(claims: &Claims) -> Vec<&str> {
    let mut ours: Vec<&str> = claims.ours.iter().map(|c| c.campaign_id.as_str()).collect();
    ours.sort();
    ours
}

fn theirs<'a>(claims: &'a Claims, campaign: &str) -> &'a Theirs {
    claims
        .theirs
        .iter()
        .find(|t| t.campaign_id == campaign)
        .unwrap_or_else(|| panic!("{campaign} reported as another replica's: {claims:?}"))
}

fn owned(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    pairs
        .iter()
        .map(|(c, h)| ((*c).to_owned(), h.map(str::to_owned)))
        .collect()
}

#[tokio::test]
async fn a_named_claim_takes_only_the_campaigns_named_and_says_until_when_another_holds_one() {
    let store = store().await;
    held(&store, "c2", "b", 6).await;
    let claims = claim(&store, "a", &["c1", "c2"], None).await;
    assert_eq!(ours(&claims), ["c1"]);
    let c2 = theirs(&claims, "c2");
    assert_eq!(c2.holder.as_deref(), Some("b"));
    let left = c2.lapses_in.expect("b's lease runs");
    assert!(
        left > Duration::from_secs(4) && left <= Duration::from_secs(6),
        "{left:?}"
    );
    assert_eq!(claims.theirs.len(), 1, "c3 and c4 were not looked at");
    assert_eq!(claims.relaying.as_deref(), Some("a"), "the smallest holder");
    assert_eq!(
        holders(&store).await,
        owned(&[
            ("c1", Some("a")),
            ("c2", Some("b")),
            ("c3", None),
            ("c4", None)
        ])
    );
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_and_a_campaign_with_nothing_to_relay_is_not_reported() {
    let store = store().await;
    held(&store, "c1", "b", -1).await;
    sqlx::query("UPDATE feed_heads SET last_seq = 0 WHERE campaign_id = 'c2'")
        .execute(store.pool())
        .await
        .unwrap();
    let claims = claim(&store, "c", &["c1", "c2"], None).await;
    assert_eq!(ours(&claims), ["c1"], "b's lease lapsed; c2 has nothing");
    assert!(claims.theirs.is_empty(), "{claims:?}");
    assert_eq!(claims.relaying.as_deref(), Some("c"));
}

#[tokio::test]
async fn a_replica_gives_up_what_it_holds_among_those_named_while_a_smaller_one_relays() {
    let store = store().await;
    held(&store, "c1", "a", 8).await;
    held(&store, "c3", "b", 8).await;
    held(&store, "c4", "b", 8).await;
    let claims = claim(&store, "b", &["c1", "c2", "c3"], None).await;
    assert!(ours(&claims).is_empty(), "{claims:?}");
    assert_eq!(claims.relaying.as_deref(), Some("a"));
    assert_eq!(theirs(&claims, "c1").holder.as_deref(), Some("a"));
    for left in ["c2", "c3"] {
        let t = theirs(&claims, left);
        assert_eq!(
            (t.holder.as_deref(), t.lapses_in),
            (None, None),
            "{left}: left to a"
        );
    }
    assert_eq!(
        holders(&store).await,
        owned(&[
            ("c1", Some("a")),
            ("c2", None),
            ("c3", None),
            ("c4", Some("b"))
        ]),
        "c4 was not named: b keeps it until it hears of it"
    );
    // a, relaying, takes what b gave up.
    let claims = claim(&store, "a", &["c1", "c2", "c3"], None).await;
    assert_eq!(ours(&claims), ["c1", "c2", "c3"]);
}

#[tokio::test]
async fn a_new_campaign_is_left_to_the_replica_known_to_relay() {
    let store = store().await;
    let claims = claim(&store, "b", &["c4"], Some("a")).await;
    assert!(ours(&claims).is_empty());
    assert_eq!(theirs(&claims, "c4").holder, None);
    assert_eq!(claims.relaying.as_deref(), Some("a"));
    assert_eq!(holders(&store).await[3], ("c4".to_owned(), None));
    // Known to relay, by a replica with a larger id: not a reason to wait.
    let claims = claim(&store, "b", &["c4"], Some("c")).await;
    assert_eq!(ours(&claims), ["c4"]);
    // With nothing to relay anywhere, the claim still says who relays.
    sqlx::query("UPDATE feed_heads SET last_seq = 0")
        .execute(store.pool())
        .await
        .unwrap();
    let claims = claim(&store, "c", &["c1"], None).await;
    assert_eq!(
        claims.relaying.as_deref(),
        None,
        "c4's lease is not among those named"
    );
    let claims = claim(&store, "c", &["c4"], None).await;
    assert_eq!(
        (claims.ours.len(), claims.theirs.len()),
        (0, 0),
        "nothing to relay"
    );
    assert_eq!(claims.relaying.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_claim_of_every_campaign_takes_what_it_may_first_and_gathers_the_leases_on_the_smallest_holder()
 {
    let store = store().await;
    held(&store, "c1", "z", 8).await;
    let every = |holder: &'static str, limit: i64| {
        let store = store.clone();
        async move {
            let mut conn = store.acquire().await.unwrap();
            relay::claim(&mut conn, holder, LEASE, limit, Campaigns::Every, None)
                .await
                .unwrap()
        }
    };
    let claims = every("a", 2).await;
    assert_eq!(
        ours(&claims),
        ["c2", "c3"],
        "the free ones first, up to the limit"
    );
    let claims = every("z", 4).await;
    assert!(ours(&claims).is_empty(), "a relays: {claims:?}");
    assert_eq!(claims.relaying.as_deref(), Some("a"));
    assert_eq!(theirs(&claims, "c1").holder, None, "z gave it up");
    assert_eq!(theirs(&claims, "c2").holder.as_deref(), Some("a"));
    let claims = every("a", 4).await;
    assert_eq!(ours(&claims), ["c1", "c2", "c3", "c4"]);
}
