//! The NATS JetStream relay, against a real nats-server: every committed change of three replicas arrives
//! in the stream exactly once, in feed order, with its feed id, through a SIGKILL of a relaying replica and
//! a restart of NATS and a crash of PostgreSQL; and the service serves while NATS is down, the relay catching
//! up once it is back.

use std::time::Duration;

use assignment_service::embedded_pg::EmbeddedPostgres;
use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use prost::Message;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::*;
use crate::nats::NatsServer;
use crate::production::{count, scrape};

const STREAM: &str = "ASSIGNMENT_EVENTS";
const SUBJECT: &str = "assignment.v1.events.camp-1";

/// A replica relaying to `nats`, looking for campaigns to relay every `interval`.
fn relay_flags(nats: &NatsServer, interval: &str) -> Vec<String> {
    [
        "--nats-url",
        &nats.url(),
        "--relay-interval",
        interval,
        "--relay-lease",
        "1s",
        "--waiting-sweep-interval",
        "500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Makes the stream as the relay would, but with a duplicate window too short to hide a repeat: only the
/// expected last subject sequence can keep one out.
async fn stream_without_deduplication(nats: &NatsServer) {
    let context = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    context
        .create_stream(async_nats::jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["assignment.v1.events.>".into()],
            duplicate_window: Duration::from_millis(100),
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Admin "admin", organizers o1..o4 replying to everything, auto-assignment on.
async fn seed(app: &TestApp) {
    app.admin("admin").await;
    let team = ["o1", "o2", "o3", "o4"];
    for organizer in team {
        app.organizer(organizer).await;
    }
    app.group("admin", "Everyone", &team, true, scope_all())
        .await;
    app.enable_auto_assign().await;
}

/// Triggers (auto), manual reassigns and resolves, `rounds` of each per channel, then a bulk unassign of
/// them all, spread over `channels`.
async fn write(channels: &[Channel], tag: &str, rounds: usize) {
    let mut tasks = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        let channel = channel.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut api = AssignmentServiceClient::new(channel);
            let mut ids = Vec::new();
            for n in 0..rounds {
                let id = format!("{tag}-{c}-{n}");
                ids.push(id.clone());
                // A replica being killed answers some calls with errors: the feed holds what committed.
                let _ = api
                    .auto_assign_conversation(system(CAMPAIGN, auto_assign_request(&id)))
                    .await;
                let _ = api
                    .reassign_conversation(as_actor(
                        "admin",
                        pb::ReassignConversationRequest {
                            conversation_id: id.clone(),
                            assignee_id: format!("o{}", 1 + n % 4),
                            expected_version: None,
                        },
                    ))
                    .await;
                if n % 3 == 0 {
                    let _ = api
                        .resolve_conversation(as_actor(
                            "admin",
                            pb::ResolveConversationRequest {
                                conversation_id: id,
                            },
                        ))
                        .await;
                }
            }
            let bulk = pb::BulkUnassignRequest {
                conversations: Some(pb::ConversationBatch {
                    conversation_ids: ids,
                }),
            };
            if let Ok(answers) = api
                .bulk_unassign(as_actor("admin", tokio_stream::iter(vec![bulk])))
                .await
            {
                let mut answers = answers.into_inner();
                while let Ok(Some(_)) = answers.message().await {}
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// `holder`, a replica that never renews, holds the campaign's lease for an hour: the relay leaves it alone.
async fn held_for_an_hour(app: &TestApp, holder: &str) {
    sqlx::query(
        "INSERT INTO relay_positions (campaign_id, holder, lease_until) \
         VALUES ($1, $2, now() + interval '1 hour')",
    )
    .bind(CAMPAIGN)
    .bind(holder)
    .execute(app.store.pool())
    .await
    .unwrap();
}

/// Waits until the relay has published the campaign's feed up to its head (every event numbered).
async fn until_relayed(app: &TestApp) -> i64 {
    let mut last = (0, 0, 0);
    for _ in 0..600 {
        let (head, relayed, unnumbered): (i64, i64, i64) = sqlx::query_as(
            "SELECT coalesce((SELECT last_seq FROM feed_heads WHERE campaign_id = $1), 0), \
                    coalesce((SELECT relayed_seq FROM relay_positions WHERE campaign_id = $1), 0), \
                    (SELECT count(*) FROM assignment_events WHERE campaign_id = $1 AND seq IS NULL)",
        )
        .bind(CAMPAIGN)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        if head > 0 && head == relayed && unnumbered == 0 {
            return head;
        }
        last = (head, relayed, unnumbered);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (head, relayed, unnumbered) = last;
    panic!(
        "the relay never caught up with the feed: head {head}, relayed {relayed}, {unnumbered} not numbered"
    );
}

/// The stream holds the campaign's feed exactly: message k is event k (its feed id, the same event as
/// the feed's history, with the same cursor), nothing missing, repeated or out of order.
async fn assert_stream_is_the_feed(app: &TestApp, nats: &NatsServer, head: i64) {
    assert_messages_are_the_feed(app, nats.messages(STREAM).await, head).await;
}

/// `messages` (subject, id, event) are the campaign's feed exactly, as [`assert_stream_is_the_feed`].
async fn assert_messages_are_the_feed(
    app: &TestApp,
    messages: Vec<(String, String, pb::AssignmentEvent)>,
    head: i64,
) {
    let history = app.campaign_history(500).await;
    assert_eq!(
        history.len() as i64,
        head,
        "the feed's history has every event"
    );
    let ids: Vec<&str> = messages.iter().map(|(_, id, _)| id.as_str()).collect();
    let expected: Vec<String> = (1..=head).map(|seq| format!("{CAMPAIGN}:{seq}")).collect();
    assert_eq!(
        ids, expected,
        "the stream's message ids are the feed's, once each, in order"
    );
    for ((subject, id, event), fed) in messages.iter().zip(&history) {
        assert_eq!(subject, SUBJECT);
        assert_eq!(event, fed, "{id} carries the event the feed delivers");
    }
}

#[tokio::test]
async fn every_change_of_three_replicas_reaches_the_stream_once_in_order_through_kills_and_restarts()
 {
    let mut nats = NatsServer::start().await;
    stream_without_deduplication(&nats).await;
    // The binary replica looks for campaigns to relay often, the in-process one seldom: the binary takes
    // the campaign first, and is the one killed; the other takes it over once its lease passed.
    let fast = relay_flags(&nats, "20ms");
    let fast: Vec<&str> = fast.iter().map(String::as_str).collect();
    let slow = relay_flags(&nats, "700ms");
    let slow: Vec<&str> = slow.iter().map(String::as_str).collect();
    let app = TestApp::start_configured(&NO_SWEEP).await;
    seed(&app).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let quiet = [("RUST_LOG", "warn".to_owned())];
    let (mut doomed, doomed_channel) =
        spawn_binary_on(&app.database_url, &addr, &fast, &quiet).await;
    let replica = TestApp::start_with(&config(&app.database_url, &slow)).await;
    let channels = [app.channel().await, replica.channel().await, doomed_channel];

    // Writes on all three replicas; the binary replica (maybe the one relaying) is killed meanwhile.
    let writes = write(&channels, "a", 12);
    let killer = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let holder: Option<String> =
            sqlx::query_scalar("SELECT holder FROM relay_positions WHERE campaign_id = $1")
                .bind(CAMPAIGN)
                .fetch_optional(app.store.pool())
                .await
                .unwrap()
                .flatten();
        doomed.kill().expect("SIGKILL a replica");
        doomed.wait().unwrap();
        holder
    };
    let ((), killed_holder) = tokio::join!(writes, killer);
    assert!(killed_holder.is_some(), "the killed replica was relaying");
    // NATS restarts while the survivors write on.
    let writes = write(&channels[..2], "b", 12);
    let restart = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        nats.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        nats.run().await;
    };
    tokio::join!(writes, restart);
    write(&channels[..2], "c", 4).await;

    let head = until_relayed(&app).await;
    assert_stream_is_the_feed(&app, &nats, head).await;
    drop(replica);
}

#[tokio::test]
async fn the_service_serves_with_nats_down_and_the_relay_catches_up_when_it_returns() {
    let mut nats = NatsServer::unstarted();
    let flags = relay_flags(&nats, "50ms");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::start_configured(&flags).await;
    seed(&app).await;
    write(&[app.channel().await], "down", 5).await;
    // Calls are served; health says the relay is not, and the service is.
    assert_eq!(app.health("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        app.health("assignment.v1.AssignmentService").await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        app.health("assignment.v1.Relay").await.unwrap(),
        ServingStatus::NotServing
    );

    nats.run().await;
    let head = until_relayed(&app).await;
    assert_stream_is_the_feed(&app, &nats, head).await;
    for _ in 0..100 {
        if app.health("assignment.v1.Relay").await.unwrap() == ServingStatus::Serving {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the relay's health never turned SERVING");
}

/// An idle relay leaves the database alone: its claim reads every campaign's lease and feed head (on a
/// distributed PostgreSQL, a query of every shard), so it runs when a head moved (the listener hears every
/// campaign's), after a failure, and every half lease as a backstop, not on every tick. Counted by the scans
/// of `feed_heads`, which only the claim and the lag gauge (every 2 s) make while nothing is written: 200
/// ticks of 20 ms in the window, a lease of 1 s.
#[tokio::test]
async fn an_idle_relay_claims_twice_a_lease_not_every_tick_and_still_relays_at_once() {
    let nats = NatsServer::start().await;
    let flags = relay_flags(&nats, "20ms");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::start_configured(&flags).await;
    seed(&app).await;
    write(&[app.channel().await], "before", 1).await;
    until_relayed(&app).await;
    // Statistics reach the views when a session goes idle, at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = feed_head_scans(&app).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = feed_head_scans(&app).await - before;
    // About 10 (8 backstop claims, 2 lag reads; 13 and 14 seen), plus whatever scans made before the window
    // a session reports only now: every tick would be about 200.
    assert!(
        idle <= 40,
        "{idle} scans of feed_heads in 4 idle seconds (every tick would be about 200)"
    );

    // A change is relayed at once all the same.
    write(&[app.channel().await], "after", 1).await;
    let head = until_relayed(&app).await;
    assert_stream_is_the_feed(&app, &nats, head).await;
}

/// A replica shutting down gives up its leases with a notification every replica hears: another relays its
/// campaigns at once, not when the lease would have lapsed nor at its next look at every campaign (here an
/// hour and half an hour away).
#[tokio::test]
async fn a_replica_shutting_down_hands_its_campaigns_over_at_once() {
    let nats = NatsServer::start().await;
    let url = nats.url();
    let flags = [
        "--nats-url",
        &url,
        "--relay-interval",
        "20ms",
        "--relay-lease",
        "1h",
    ];
    let app = TestApp::start_configured(&flags).await;
    seed(&app).await;
    // Another replica holds the campaign's lease, and relays nothing: it is shutting down.
    held_for_an_hour(&app, "leaving").await;
    write(&[app.channel().await], "held", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let relayed: i64 =
        sqlx::query_scalar("SELECT relayed_seq FROM relay_positions WHERE campaign_id = $1")
            .bind(CAMPAIGN)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(
        relayed, 0,
        "the campaign is another replica's while it holds it"
    );

    assignment_service::relay::release(&app.store, "leaving", false).await;
    let head = until_relayed(&app).await;
    assert_stream_is_the_feed(&app, &nats, head).await;
}

/// How many times `feed_heads` was scanned, as the statistics views say now.
async fn feed_head_scans(app: &TestApp) -> i64 {
    let mut conn = app.store.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables \
          WHERE schemaname = current_schema() AND relname = 'feed_heads'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// The moment between JetStream's ack and the position's commit, made to last: the position is set back
/// to nothing after the relay published everything, past the duplicate window. The relay must not publish
/// again what the stream holds: its publishes expect the subject's last sequence, are refused, and it goes
/// on after the stream's last message.
#[tokio::test]
async fn a_relay_that_lost_its_position_goes_on_after_the_streams_last_message() {
    let nats = NatsServer::start().await;
    stream_without_deduplication(&nats).await;
    let flags = relay_flags(&nats, "50ms");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::start_configured(&flags).await;
    seed(&app).await;
    write(&[app.channel().await], "first", 4).await;
    until_relayed(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // past the duplicate window
    sqlx::query(
        "UPDATE relay_positions SET relayed_seq = 0, subject_seq = 0 WHERE campaign_id = $1",
    )
    .bind(CAMPAIGN)
    .execute(app.store.pool())
    .await
    .unwrap();
    write(&[app.channel().await], "then", 4).await;
    let head = until_relayed(&app).await;
    assert_stream_is_the_feed(&app, &nats, head).await;
}

/// PostgreSQL crashes (an immediate shutdown: no checkpoint, unwritten WAL lost, recovery at the next
/// start) while two replicas write and relay, and comes back on the same socket. Relay positions are
/// committed without waiting for their flush, so the crash may take the latest back: the relay then finds
/// where the stream stands. Events are committed durably, so none the relay published can be lost.
#[tokio::test]
async fn a_postgresql_crash_mid_run_leaves_the_stream_exactly_the_feed() {
    let dir = std::env::temp_dir().join(format!("relay-pg-crash-{}", uuid::Uuid::new_v4()));
    // Durable, as in production: the shared test cluster runs without fsync.
    let postgres = EmbeddedPostgres::start(&dir, &[]).expect("a private PostgreSQL");
    let (port, url) = (postgres.port(), postgres.url("postgres"));
    let nats = NatsServer::start().await;
    stream_without_deduplication(&nats).await;
    let flags = relay_flags(&nats, "20ms");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::start_with(&config(&url, &flags)).await;
    let replica = TestApp::start_with(&config(&url, &flags)).await;
    seed(&app).await;
    let channels = [app.channel().await, replica.channel().await];

    let writes = write(&channels, "a", 15);
    let crash = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut postgres = postgres;
            postgres.crash();
            std::thread::sleep(Duration::from_millis(300));
            EmbeddedPostgres::start_on_port(&dir, port, &[]).expect("PostgreSQL starts again")
        })
        .await
        .unwrap()
    };
    let ((), postgres) = tokio::join!(writes, crash);
    write(&channels, "b", 4).await;

    let head = until_relayed(&app).await;
    assert_stream_is_the_feed(&app, &nats, head).await;
    drop((app, replica, postgres));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
}

/// Another publisher writes into the stream all the while the relay publishes a backlog: its bursts are
/// broken into, refused from the break on (each later message expects the one before it as the stream's
/// last, at the sequence predicted for it) and sent again, and the campaign's subject still holds its feed
/// exactly.
#[tokio::test]
async fn bursts_another_publisher_writes_into_leave_the_campaign_exactly_the_feed() {
    let nats = NatsServer::start().await;
    stream_without_deduplication(&nats).await;
    let flags = relay_flags(&nats, "20ms");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::start_configured(&flags).await;
    seed(&app).await;
    // A backlog: a holder that never renews keeps the campaign from the relay while writes pile up.
    held_for_an_hour(&app, "paused").await;
    write(&[app.channel().await], "backlog", 60).await;

    let other = async_nats::connect(nats.url()).await.unwrap();
    let publishing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let foreign = tokio::spawn({
        let publishing = publishing.clone();
        async move {
            let payload = pb::AssignmentEvent::default().encode_to_vec();
            while publishing.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..20 {
                    other
                        .publish("assignment.v1.events.other", payload.clone().into())
                        .await
                        .unwrap();
                }
                other.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    sqlx::query(
        "UPDATE relay_positions SET holder = NULL, lease_until = NULL WHERE campaign_id = $1",
    )
    .bind(CAMPAIGN)
    .execute(app.store.pool())
    .await
    .unwrap();
    let head = until_relayed(&app).await;
    publishing.store(false, std::sync::atomic::Ordering::Relaxed);
    foreign.await.unwrap();

    let messages = nats.messages(STREAM).await;
    let foreign_messages = messages
        .iter()
        .filter(|(subject, ..)| subject != SUBJECT)
        .count();
    let ours = messages
        .into_iter()
        .filter(|(subject, ..)| subject == SUBJECT)
        .collect();
    assert!(
        foreign_messages > 0,
        "the other publisher wrote into the stream"
    );
    assert_messages_are_the_feed(&app, ours, head).await;
    let refused = count(
        &scrape(app.metrics_addr).await,
        "relay_rejected_total{reason=\"burst_interleaved\"}",
    );
    assert!(
        refused > 0.0,
        "no burst was broken into: the test proved nothing"
    );
}
