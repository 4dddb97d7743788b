//! An organizer learns nothing they cannot see: not through queue positions, nor through event ids,
//! feed cursors and page tokens, whose underlying counters count hidden conversations' and other
//! campaigns' activity.

use assignment_service::domain::paging::PageScope;
use assignment_service::pb;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Code;

use crate::feed::{assign, next_events, quiet, unassign, watch};
use crate::harness::*;

const OTHER: &str = "camp-2";

async fn waiting_page(
    app: &TestApp,
    actor: &str,
    page_size: i32,
    page_token: String,
) -> pb::ListWaitingConversationsResponse {
    app.assignments()
        .await
        .list_waiting_conversations(as_actor(
            actor,
            pb::ListWaitingConversationsRequest {
                page_size,
                page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// (conversation, position) as `actor` sees the queue in one page.
async fn queue_as(app: &TestApp, actor: &str) -> Vec<(String, i64)> {
    waiting_page(app, actor, 0, String::new())
        .await
        .conversations
        .into_iter()
        .map(|w| (w.conversation.unwrap().conversation_id, w.position))
        .collect()
}

fn owned(items: &[(&str, i64)]) -> Vec<(String, i64)> {
    items.iter().map(|(c, p)| (c.to_string(), *p)).collect()
}

/// A conversation of another campaign waits (moving the one queue-key sequence every campaign shares).
async fn queue_in_other_campaign(app: &TestApp, conversation: &str) {
    app.assignments()
        .await
        .auto_assign_conversation(system(OTHER, auto_assign_request(conversation)))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_organizer_counts_queue_positions_over_what_they_may_view() {
    let app = TestApp::start_configured(&["--waiting-sweep-interval", "1h"]).await;
    app.admin("admin").await;
    app.organizer("org1").await;
    // org1 may view the "vol" conversations but reply to none: nobody can take anything, all of it waits.
    app.group("admin", "Viewers", &["org1"], false, scope_tags(&["vol"]))
        .await;
    app.enable_auto_assign().await;
    app.directory()
        .await
        .upsert_user(system(
            OTHER,
            pb::UpsertUserRequest {
                user_id: "admin".into(),
                role: pb::Role::Admin.into(),
                display_name: "Other admin".into(),
            },
        ))
        .await
        .unwrap();
    app.enable_auto_assign_in(OTHER).await;
    // Queue keys are microseconds of the campaign's queue clock times 1000: long enough to spot in a token.
    for (conversation, tags) in [
        ("h1", &[][..]),
        ("v1", &["vol"][..]),
        ("h2", &[][..]),
        ("v2", &["vol"][..]),
        ("v3", &["vol"][..]),
    ] {
        app.conversation(conversation, tags).await;
        let reply = app.auto_assign(conversation).await;
        assert_eq!(reply.outcome(), pb::AutoAssignOutcome::Queued);
        queue_in_other_campaign(&app, &format!("other-{conversation}")).await;
    }

    // The admin sees the whole queue; org1 counts from their first visible conversation.
    assert_eq!(
        queue_as(&app, "admin").await,
        owned(&[("h1", 1), ("v1", 2), ("h2", 3), ("v2", 4), ("v3", 5)])
    );
    assert_eq!(
        queue_as(&app, "org1").await,
        owned(&[("v1", 1), ("v2", 2), ("v3", 3)])
    );

    // Page by page, the same positions; no token carries a queue key, which counts every campaign's queue.
    let keys: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM waiting_conversations WHERE campaign_id = $1 ORDER BY position",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = waiting_page(&app, "org1", 1, token).await;
        paged.extend(
            page.conversations
                .into_iter()
                .map(|w| (w.conversation.unwrap().conversation_id, w.position)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        let bytes = URL_SAFE_NO_PAD.decode(&page.next_page_token).unwrap();
        for key in &keys {
            let key = key.to_string();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "a page token carries queue key {key}"
            );
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, owned(&[("v1", 1), ("v2", 2), ("v3", 3)]));

    // When the hidden conversation ahead leaves the queue, org1's view does not move.
    app.assignments()
        .await
        .resolve_conversation(as_actor(
            "admin",
            pb::ResolveConversationRequest {
                conversation_id: "h1".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        queue_as(&app, "org1").await,
        owned(&[("v1", 1), ("v2", 2), ("v3", 3)])
    );
    assert_eq!(queue_as(&app, "admin").await[0], ("v1".to_string(), 1));
}

/// Admin "admin", organizers org1 (in a group covering tag "vol") and org2; c1 (vol) is visible to org1,
/// c2 is not. Campaign camp-2 has its own admin, organizer and conversation b1.
async fn two_campaigns() -> TestApp {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.organizer("org1").await;
    app.organizer("org2").await;
    app.group(
        "admin",
        "Volunteers",
        &["org1", "org2"],
        true,
        scope_tags(&["vol"]),
    )
    .await;
    app.conversation("c1", &["vol"]).await;
    app.conversation("c2", &[]).await;
    for (user, role) in [("admin", pb::Role::Admin), ("bo", pb::Role::Organizer)] {
        app.directory()
            .await
            .upsert_user(system(
                OTHER,
                pb::UpsertUserRequest {
                    user_id: user.into(),
                    role: role.into(),
                    display_name: user.into(),
                },
            ))
            .await
            .unwrap();
    }
    app.conversation_in(OTHER, "b1", &[]).await;
    app
}

/// Assigns (or with `to` None, unassigns) b1 in the other campaign.
async fn change_in_other_campaign(app: &TestApp, to: Option<&str>) {
    let mut client = app.assignments().await;
    match to {
        Some(to) => {
            client
                .assign_conversation(as_actor_in(
                    OTHER,
                    "admin",
                    pb::AssignConversationRequest {
                        conversation_id: "b1".into(),
                        assignee_id: to.into(),
                        expected_version: None,
                    },
                ))
                .await
                .unwrap();
        }
        None => {
            client
                .unassign_conversation(as_actor_in(
                    OTHER,
                    "admin",
                    pb::UnassignConversationRequest {
                        return_to_queue: false,
                        conversation_id: "b1".into(),
                        expected_version: None,
                    },
                ))
                .await
                .unwrap();
        }
    }
}

/// Every event of `campaign` through ListAssignmentHistory as its admin, a page of 2 at a time, each page
/// asked of the next of `apps` in turn (replicas decode each other's tokens).
async fn campaign_history(apps: &[&TestApp], campaign: &str) -> Vec<pb::AssignmentEvent> {
    let mut events = Vec::new();
    let mut token = String::new();
    for turn in 0.. {
        let page = apps[turn % apps.len()]
            .assignments()
            .await
            .list_assignment_history(as_actor_in(
                campaign,
                "admin",
                pb::ListAssignmentHistoryRequest {
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    events
}

/// (row id, feed number) of c1's events, in feed order, as the database holds them.
async fn c1_counters(app: &TestApp) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT event_id, seq FROM assignment_events \
         WHERE campaign_id = $1 AND conversation_id = 'c1' ORDER BY seq",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn event_ids_and_cursors_count_neither_hidden_nor_other_campaigns_events() {
    let app = two_campaigns().await;
    let replica = app.replica().await;
    let mut org1 = watch(&app, Some("org1"), "").await;
    assign(&app, "c1", "org1").await;
    // Between org1's two events: three of a conversation org1 may not view, and the other campaign's.
    assign(&app, "c2", "org2").await;
    change_in_other_campaign(&app, Some("bo")).await;
    unassign(&app, "c2").await;
    change_in_other_campaign(&app, None).await;
    assign(&app, "c2", "org2").await;
    unassign(&app, "c1").await;
    let seen = next_events(&mut org1, 2).await;
    assert_eq!(
        seen.iter()
            .map(|e| e.conversation_id.as_str())
            .collect::<Vec<_>>(),
        ["c1", "c1"]
    );
    quiet(&mut org1).await;

    // The ids are neither the rows' ids (one sequence across campaigns) nor the feed's numbers, and their
    // distance is neither distance: nothing tells org1 how many events came between.
    let counters = c1_counters(&app).await;
    let (raw, seq): (Vec<i64>, Vec<i64>) = counters.into_iter().unzip();
    for (event, (raw, seq)) in seen.iter().zip(raw.iter().zip(&seq)) {
        assert_ne!(event.event_id, *raw);
        assert_ne!(event.event_id, *seq);
    }
    let distance = seen[1].event_id - seen[0].event_id;
    assert_ne!(
        distance,
        raw[1] - raw[0],
        "the ids count every campaign's events"
    );
    assert_ne!(distance, seq[1] - seq[0], "the ids count the hidden events");

    // Even the admin's consecutive events have ids that are no run of numbers; the other campaign's ids
    // are its own. History pages resume on any replica.
    let all = campaign_history(&[&app, &replica], CAMPAIGN).await;
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].event_id, seen[0].event_id);
    // c1's unassignment shares no row with c2's last assignment: numbered together, they may come in
    // either order (their stamps order them, `docs/scaling.md`), so it is found by its id.
    let unassigned = all.iter().find(|e| e.event_id == seen[1].event_id);
    assert_eq!(
        unassigned.map(|e| e.cursor.as_str()),
        Some(seen[1].cursor.as_str())
    );
    assert!(
        all.windows(2)
            .all(|w| (w[1].event_id - w[0].event_id).abs() > 1),
        "consecutive events have consecutive ids: {:?}",
        all.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    let other = campaign_history(&[&replica, &app], OTHER).await;
    assert_eq!(other.len(), 2);
    for (a, b) in all.iter().zip(&other) {
        assert_ne!(a.event_id, b.event_id);
    }

    // A cursor resumes exactly once on another replica, and is refused in another campaign.
    let mut resumed = watch(&replica, Some("org1"), &seen[0].cursor).await;
    assert_eq!(next_events(&mut resumed, 1).await, seen[1..]);
    quiet(&mut resumed).await;
    let elsewhere = app
        .assignments()
        .await
        .watch_assignment_events(as_actor_in(
            OTHER,
            "admin",
            pb::WatchAssignmentEventsRequest {
                cursor: seen[0].cursor.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("another campaign's cursor");
    assert_eq!(elsewhere.code(), Code::InvalidArgument);
}

/// Tokens are not signed: were a feed number their key, org1 could make the cursor (or history page
/// token) of any number and, resuming from each, find out how many events hide between the ones they see.
#[tokio::test]
async fn a_cursor_or_page_token_made_from_a_feed_number_is_refused() {
    let app = two_campaigns().await;
    assign(&app, "c1", "org1").await;
    assign(&app, "c2", "org2").await;
    unassign(&app, "c2").await;
    unassign(&app, "c1").await;
    // Every number the feed holds, and one past it.
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM assignment_events WHERE campaign_id = $1")
            .bind(CAMPAIGN)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(events, 4);
    let cursors = PageScope::feed(CAMPAIGN);
    let pages = PageScope::history(CAMPAIGN, Some("c1"));
    for seq in 0..=events + 1 {
        let forged = app
            .assignments()
            .await
            .watch_assignment_events(as_actor(
                "org1",
                pb::WatchAssignmentEventsRequest {
                    cursor: cursors.token(&seq.to_string()),
                    ..Default::default()
                },
            ))
            .await;
        assert_eq!(
            forged.expect_err("a cursor made from a feed number").code(),
            Code::InvalidArgument
        );
        let forged = app
            .assignments()
            .await
            .list_assignment_history(as_actor(
                "org1",
                pb::ListAssignmentHistoryRequest {
                    conversation_id: "c1".into(),
                    page_size: 1,
                    page_token: pages.token(&seq.to_string()),
                },
            ))
            .await;
        // It names no place org1 could choose: refused, or (with a key past every event) an empty page.
        match forged {
            Ok(page) => assert!(
                page.into_inner().events.is_empty(),
                "paged from number {seq}"
            ),
            Err(status) => assert_eq!(status.code(), Code::InvalidArgument),
        }
    }
    // The tokens the service issues still page org1 through c1's history.
    let first = app
        .assignments()
        .await
        .list_assignment_history(as_actor(
            "org1",
            pb::ListAssignmentHistoryRequest {
                conversation_id: "c1".into(),
                page_size: 1,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let second = app
        .assignments()
        .await
        .list_assignment_history(as_actor(
            "org1",
            pb::ListAssignmentHistoryRequest {
                conversation_id: "c1".into(),
                page_size: 1,
                page_token: first.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.events[0].action(), pb::AssignmentAction::Assign);
    assert_eq!(second.events[0].action(), pb::AssignmentAction::Unassign);
    assert!(second.next_page_token.is_empty());
}
