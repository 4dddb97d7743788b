//! Replies and silence timers through the real server: a member's message starts a wait, a reply ends it,
//! and a holder who has not replied in time loses the conversation to the next organizer who has not let
//! this wait lapse (or, under NOTIFY, is flagged once). RecordReply is idempotent by message id and
//! refused for senders who may not reply.

use std::time::Duration;

use assignment_service::pb;
use tonic::Code;

use crate::harness::*;

/// Timers looked for every 50 ms, so a test waits little past a due time.
const FAST_TIMERS: [&str; 2] = ["--reply-timer-interval", "50ms"];

/// Three organizers who may reply to everything, auto-assignment on, replies due within `within` seconds.
async fn team(app: &TestApp, within: i32, on_overdue: pb::OnReplyOverdue) {
    app.admin("admin").await;
    for organizer in ["o1", "o2", "o3"] {
        app.organizer(organizer).await;
    }
    app.group("admin", "everyone", &["o1", "o2", "o3"], true, scope_all())
        .await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            auto_assign_enabled: Some(true),
            reply_within_seconds: Some(within),
            on_reply_overdue: on_overdue.into(),
            ..Default::default()
        },
    )
    .await;
}

async fn get(app: &TestApp, conversation: &str) -> pb::Conversation {
    app.assignments()
        .await
        .get_conversation(as_actor(
            "admin",
            pb::GetConversationRequest {
                conversation_id: conversation.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap()
}

fn reply(conversation: &str, message: &str, sender: &str) -> pb::RecordReplyRequest {
    pb::RecordReplyRequest {
        conversation_id: conversation.into(),
        message_id: message.into(),
        sender_id: sender.into(),
    }
}

/// Waits until `done` holds for the conversation (at most 10 s), and returns it.
async fn until(
    app: &TestApp,
    conversation: &str,
    done: impl Fn(&pb::Conversation) -> bool,
) -> pb::Conversation {
    for _ in 0..200 {
        let now = get(app, conversation).await;
        if done(&now) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{conversation} never reached the expected state: {:?}",
        get(app, conversation).await
    );
}

/// (action, from, to, cause) of each event.
fn story(events: &[pb::AssignmentEvent]) -> Vec<(pb::AssignmentAction, String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.action(),
                e.from_user_id.clone().unwrap_or_default(),
                e.to_user_id.clone().unwrap_or_default(),
                e.cause.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_overdue_reply_reroutes_to_who_has_not_let_it_lapse_and_a_reply_in_time_stops_the_timer()
{
    let app = TestApp::start_configured(&FAST_TIMERS).await;
    team(&app, 1, pb::OnReplyOverdue::Unspecified).await;
    let first = app.auto_assign("c1").await.conversation.unwrap();
    assert_eq!(first.assignee_id.as_deref(), Some("o1"));
    let since = first
        .awaiting_reply_since
        .expect("the message starts a wait");
    let due = first.reply_due_at.expect("a timer runs for o1");
    assert_eq!(
        due.seconds - since.seconds,
        1,
        "due a second after the message"
    );
    let answered = app.auto_assign("c2").await.conversation.unwrap();
    assert_eq!(answered.assignee_id.as_deref(), Some("o2"));
    let replied = app
        .assignments()
        .await
        .record_reply(as_actor("o2", reply("c2", "r1", "")))
        .await
        .unwrap()
        .into_inner();
    assert!(!replied.duplicate);
    let replied = replied.conversation.unwrap();
    assert_eq!(replied.awaiting_reply_since, None);
    assert_eq!(replied.reply_due_at, None);

    // o1 lets c1 lapse: it goes to o3 (after o2 in the rotation), then o3 lets it lapse: o2 gets it.
    let second = until(&app, "c1", |c| c.assignee_id.as_deref() == Some("o3")).await;
    assert!(second.reply_due_at.is_some(), "o3 is timed too");
    until(&app, "c1", |c| c.assignee_id.as_deref() == Some("o2")).await;
    // o2 lets it lapse too: the third lapse (max 2 reroutes timed) puts it in the queue, untimed, and
    // nobody who has not let it lapse is left to take it.
    let waiting = until(&app, "c1", |c| c.assignee_id.is_none()).await;
    assert_eq!(waiting.awaiting_reply_since, None, "no longer timed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(&app, "c1").await.assignee_id,
        None,
        "nobody left to take it"
    );

    use pb::AssignmentAction::*;
    let overdue = |from: &str| {
        (
            Unassign,
            from.to_owned(),
            String::new(),
            "REPLY_OVERDUE".to_owned(),
        )
    };
    let queued = (
        Queued,
        String::new(),
        String::new(),
        "REPLY_OVERDUE".to_owned(),
    );
    let left = (LeftQueue, String::new(), String::new(), String::new());
    let assign = |to: &str| (Assign, String::new(), to.to_owned(), String::new());
    assert_eq!(
        story(&app.history("c1").await),
        vec![
            assign("o1"),
            overdue("o1"),
            queued.clone(),
            left.clone(),
            assign("o3"),
            overdue("o3"),
            queued.clone(),
            left,
            assign("o2"),
            overdue("o2"),
            queued,
        ]
    );
    // c2 was answered in time: it stays with o2, and nothing else happened to it.
    assert_eq!(story(&app.history("c2").await), vec![assign("o2")]);

    // The preview names who let it lapse; the queue lists it.
    let preview = app
        .assignments()
        .await
        .preview_auto_assign(as_actor(
            "admin",
            pb::PreviewAutoAssignRequest {
                conversation_id: "c1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.next_assignee_id, None);
    for candidate in preview
        .candidates
        .iter()
        .filter(|c| c.user_id.starts_with('o'))
    {
        assert!(
            candidate
                .reasons()
                .any(|r| r == pb::IneligibleReason::Lapsed),
            "{candidate:?}"
        );
    }
    // A reply ends the wait and forgets who let it lapse: the next drain gives it to o1 again (the
    // admin replies: nobody holds it).
    app.assignments()
        .await
        .record_reply(as_actor("admin", reply("c1", "r2", "")))
        .await
        .unwrap();
    app.set_availability("o1", pb::Availability::Available)
        .await;
    let taken = until(&app, "c1", |c| c.assignee_id.is_some()).await;
    assert_eq!(taken.reply_due_at, None, "nothing unanswered: no timer");
}

#[tokio::test]
async fn under_notify_the_holder_keeps_it_and_is_flagged_once() {
    let app = TestApp::start_configured(&FAST_TIMERS).await;
    team(&app, 1, pb::OnReplyOverdue::Notify).await;
    app.auto_assign("c1").await;
    let flagged = until(&app, "c1", |c| c.reply_due_at.is_none()).await;
    assert_eq!(flagged.assignee_id.as_deref(), Some("o1"));
    assert!(
        flagged.awaiting_reply_since.is_some(),
        "the member still waits"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = story(&app.history("c1").await);
    use pb::AssignmentAction::*;
    assert_eq!(
        events,
        vec![
            (Assign, String::new(), "o1".into(), String::new()),
            (
                ReplyOverdue,
                "o1".into(),
                String::new(),
                "REPLY_OVERDUE".into()
            ),
        ],
        "flagged exactly once"
    );
}

#[tokio::test]
async fn a_reply_is_recorded_once_and_only_from_who_may_reply() {
    let app = TestApp::start_configured(&FAST_TIMERS).await;
    team(&app, 3600, pb::OnReplyOverdue::Unspecified).await;
    app.auto_assign("c1").await;
    app.auto_assign("c2").await;
    let mut api = app.assignments().await;

    // Someone else's conversation: refused with the reason the Send button would show.
    let refused = expect_code(
        api.record_reply(as_actor("o2", reply("c1", "m1", "")))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&refused), "REPLY_NOT_ALLOWED");
    assert!(
        refused.message().contains("assigned to o1"),
        "{}",
        refused.message()
    );
    // A system names the sender; a user reports only their own replies.
    let missing = expect_code(
        api.record_reply(system(CAMPAIGN, reply("c1", "m1", "")))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        missing.message().contains("sender_id"),
        "{}",
        missing.message()
    );
    expect_code(
        api.record_reply(as_actor("o1", reply("c1", "m1", "o2")))
            .await,
        Code::InvalidArgument,
    );

    // The holder's reply, reported twice (by a system, then retried): one reply.
    let first = api
        .record_reply(system(CAMPAIGN, reply("c1", "m1", "o1")))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    assert_eq!(first.conversation.unwrap().awaiting_reply_since, None);
    let again = api
        .record_reply(system(CAMPAIGN, reply("c1", "m1", "o1")))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(app.count("replies").await, 1);
    // The same message id for another conversation is a caller's mistake.
    let reused = expect_code(
        api.record_reply(system(CAMPAIGN, reply("c2", "m1", "o2")))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&reused), "MESSAGE_ID_REUSED");
    // A new member message starts a new wait; a redelivered one does not restart it.
    let next = api
        .auto_assign_conversation(system(
            CAMPAIGN,
            pb::AutoAssignConversationRequest {
                trigger_id: "t-c1-2".into(),
                ..auto_assign_request("c1")
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation
        .unwrap();
    assert!(next.awaiting_reply_since.is_some());
    assert!(next.reply_due_at.is_some());
    let redelivered = app.auto_assign("c1").await.conversation.unwrap();
    assert_eq!(redelivered.awaiting_reply_since, next.awaiting_reply_since);
    // Resolving ends the wait; a hidden conversation answers as a missing one.
    app.resolve_as_admin("c1").await;
    assert_eq!(get(&app, "c1").await.awaiting_reply_since, None);
    app.organizer("o9").await;
    let hidden = api
        .record_reply(as_actor("o9", reply("c1", "m9", "")))
        .await
        .unwrap_err();
    let missing = api
        .record_reply(as_actor("o9", reply("nope", "m9", "")))
        .await
        .unwrap_err();
    assert_same_as_missing(&hidden, "c1", &missing, "nope");
}

#[tokio::test]
async fn the_timer_settings_round_trip_and_bad_values_are_refused() {
    let app = TestApp::start().await;
    app.admin("admin").await;
    let mut api = app.assignments().await;
    let defaults = api
        .get_inbox_settings(as_actor("admin", pb::GetInboxSettingsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(defaults.reply_within_seconds, 0, "off by default");
    assert_eq!(defaults.on_reply_overdue(), pb::OnReplyOverdue::Reassign);
    assert_eq!(defaults.max_overdue_reassignments, 2);
    let set = api
        .update_inbox_settings(as_actor(
            "admin",
            pb::UpdateInboxSettingsRequest {
                reply_within_seconds: Some(900),
                on_reply_overdue: pb::OnReplyOverdue::Notify.into(),
                max_overdue_reassignments: Some(5),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        (
            set.reply_within_seconds,
            set.on_reply_overdue(),
            set.max_overdue_reassignments
        ),
        (900, pb::OnReplyOverdue::Notify, 5)
    );
    let off = api
        .update_inbox_settings(as_actor(
            "admin",
            pb::UpdateInboxSettingsRequest {
                reply_within_seconds: Some(0),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(off.reply_within_seconds, 0);
    assert_eq!(off.max_overdue_reassignments, 5, "the rest kept");
    let bad = expect_code(
        api.update_inbox_settings(as_actor(
            "admin",
            pb::UpdateInboxSettingsRequest {
                reply_within_seconds: Some(-1),
                max_overdue_reassignments: Some(101),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    assert!(
        bad.message().contains("reply_within_seconds"),
        "{}",
        bad.message()
    );
    assert!(
        bad.message().contains("max_overdue_reassignments"),
        "{}",
        bad.message()
    );
}

#[tokio::test]
async fn a_reply_that_commits_while_the_timer_waits_for_its_row_wins() {
    // Timers fire only when this test says.
    let app = TestApp::start_configured(&["--reply-timer-interval", "24h"]).await;
    team(&app, 1, pb::OnReplyOverdue::Unspecified).await;
    app.auto_assign("c1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A reply in flight: its write ended the wait under the conversation's row lock, not committed yet.
    let (reply, pid) = app
        .hold_locks(
            "UPDATE conversations SET awaiting_reply_since = NULL, lapsed_by = '{}' \
              WHERE campaign_id = $1 AND conversation_id = 'c1'",
        )
        .await;
    let store = app.store.clone();
    let timer = tokio::spawn(async move {
        let mut tx = store.pool().begin().await.unwrap();
        let due = assignment_service::store::replies::lock_due(&mut tx, CAMPAIGN, 1, 500)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        due
    });
    app.until_blocked_by(pid).await;
    reply.commit().await.unwrap();
    // The timer read c1 as due before the reply committed; its row lock returns the answered version.
    assert!(
        timer.await.unwrap().is_empty(),
        "an answered conversation fired"
    );
}
