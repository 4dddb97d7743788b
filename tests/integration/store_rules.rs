//! The rules SQL applies (`store::rules`) agree with the Rust rules, case by case, on a fresh schema and
//! below gRPC: every query that filters by what a user may view with `domain::access::may_view`, the
//! batch's eligibility with the preview's `Candidate::reasons`, and a new settings row with the domain's
//! defaults. Also: the shared history-event and leave-the-queue shapes write what each change recorded.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use assignment_service::domain::access::may_view;
use assignment_service::domain::auto_assign::{
    Candidate, DEFAULT_PRIORITY_STEP_SECONDS, Ineligible, Load, OnUnavailable, RotationStart,
    RoutingMode, SettingsChange,
};
use assignment_service::domain::model::{
    AssignmentAction, AssignmentSource, Availability, ConversationStatus, UserRef,
};
use assignment_service::domain::replies::ReplySettings;
use assignment_service::store::{
    Store, auto_assign, conversations, feed, inbox_settings, preview, users, waiting,
};

use crate::harness::*;

/// Users: (id, role, active, availability, groups they are in).
const USERS: &[(&str, &str, bool, &str, &[&str])] = &[
    ("admin", "ADMIN", true, "AVAILABLE", &[]),
    ("admin-in-group", "ADMIN", true, "AVAILABLE", &["reply-all"]),
    ("admin-off", "ADMIN", false, "AVAILABLE", &[]),
    ("o-view-all", "ORGANIZER", true, "AVAILABLE", &["view-all"]),
    (
        "o-reply-all",
        "ORGANIZER",
        true,
        "AVAILABLE",
        &["reply-all"],
    ),
    ("o-tag", "ORGANIZER", true, "AVAILABLE", &["reply-vip"]),
    ("o-view-tag", "ORGANIZER", true, "AVAILABLE", &["view-vip"]),
    (
        "o-listed",
        "ORGANIZER",
        true,
        "AVAILABLE",
        &["reply-listed"],
    ),
    ("o-none", "ORGANIZER", true, "AVAILABLE", &[]),
    ("o-off", "ORGANIZER", false, "AVAILABLE", &["reply-all"]),
    ("o-away", "ORGANIZER", true, "AWAY", &["reply-all"]),
    ("o-offline", "ORGANIZER", true, "OFFLINE", &["reply-all"]),
];

/// An access group: (name, can_reply, scope_all, scope tags, listed conversations).
type Group = (
    &'static str,
    bool,
    bool,
    &'static [&'static str],
    &'static [&'static str],
);

/// The access groups. All grant view: the schema holds `can_view OR NOT can_reply` (a group that lets
/// reply lets view), so "reply only" is no case.
const GROUPS: &[Group] = &[
    ("view-all", false, true, &[], &[]),
    ("reply-all", true, true, &[], &[]),
    ("reply-vip", true, false, &["vip"], &[]),
    ("view-vip", false, false, &["vip"], &[]),
    ("reply-listed", true, false, &[], &["c-listed"]),
];

/// Conversations: (id, tags, assignee).
const CONVERSATIONS: &[(&str, &[&str], Option<&str>)] = &[
    ("c-plain", &[], None),
    ("c-vip", &["vip"], None),
    ("c-listed", &[], None),
    ("c-held-none", &[], Some("o-none")),
    ("c-held-off", &[], Some("o-off")),
    ("c-vip-held", &["vip"], Some("o-tag")),
];

/// A fresh schema, migrated, with the cases above in `CAMPAIGN`; every conversation also waits in the
/// queue (in the order above), so the queue's reads see them all.
async fn fresh_store() -> Store {
    let store = Store::connect(&fresh_schema_url().await, 2, Duration::from_secs(30))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let pool = store.pool();
    for (id, role, active, availability, _) in USERS {
        sqlx::query(
            "INSERT INTO users (campaign_id, user_id, role, active, availability) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(CAMPAIGN)
        .bind(id)
        .bind(role)
        .bind(active)
        .bind(availability)
        .execute(pool)
        .await
        .unwrap();
    }
    for (id, tags, assignee) in CONVERSATIONS {
        sqlx::query(
            "INSERT INTO conversations (campaign_id, conversation_id, member_id, member_tags, \
                                        assignee_id, assigned_at) \
             VALUES ($1, $2, 'm', $3, $4, CASE WHEN $4::text IS NULL THEN NULL ELSE now() END)",
        )
        .bind(CAMPAIGN)
        .bind(id)
        .bind(tags)
        .bind(assignee)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO waiting_conversations (campaign_id, conversation_id, position) \
             SELECT $1, $2, coalesce(max(position), 0) + 1 FROM waiting_conversations WHERE campaign_id = $1",
        )
        .bind(CAMPAIGN)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    }
    for (name, reply, all, tags, listed) in GROUPS {
        let members: Vec<&str> = USERS
            .iter()
            .filter(|user| user.4.contains(name))
            .map(|user| user.0)
            .collect();
        sqlx::query(
            "WITH g AS ( \
               INSERT INTO access_groups (campaign_id, access_group_id, name, can_view, can_reply, \
                                          scope_all, scope_tags) \
               VALUES ($1, gen_random_uuid(), $2, true, $3, $4, $5) RETURNING access_group_id \
             ), m AS ( \
               INSERT INTO access_group_organizers (campaign_id, access_group_id, user_id) \
               SELECT $1, g.access_group_id, u FROM g, unnest($6::text[]) AS u \
             ) \
             INSERT INTO access_group_conversations (campaign_id, access_group_id, conversation_id) \
             SELECT $1, g.access_group_id, x FROM g, unnest($7::text[]) AS x",
        )
        .bind(CAMPAIGN)
        .bind(name)
        .bind(reply)
        .bind(all)
        .bind(tags)
        .bind(&members)
        .bind(listed)
        .execute(pool)
        .await
        .unwrap();
    }
    store
}

fn user_ref(id: &str) -> UserRef {
    let (user_id, role, active, _, _) = USERS.iter().find(|u| u.0 == id).unwrap();
    UserRef {
        user_id: user_id.to_string(),
        role: if *role == "ADMIN" {
            assignment_service::domain::model::Role::Admin
        } else {
            assignment_service::domain::model::Role::Organizer
        },
        active: *active,
    }
}

fn set(ids: impl IntoIterator<Item = impl Into<String>>) -> BTreeSet<String> {
    ids.into_iter().map(Into::into).collect()
}

/// What `domain::access::may_view` says of each user and conversation, from the grants the store reads.
async fn rust_views(store: &Store) -> HashMap<String, BTreeSet<String>> {
    let mut conn = store.pool().acquire().await.unwrap();
    let mut views = HashMap::new();
    for (user, ..) in USERS {
        let mut seen = BTreeSet::new();
        for (conversation, ..) in CONVERSATIONS {
            let viewed = conversations::view(&mut conn, CAMPAIGN, conversation, user)
                .await
                .unwrap()
                .unwrap();
            let assignee = viewed.conversation.assignee_id.as_deref();
            if may_view(&user_ref(user), assignee, viewed.grants) {
                seen.insert(conversation.to_string());
            }
        }
        views.insert(user.to_string(), seen);
    }
    views
}

#[tokio::test]
async fn every_query_that_filters_by_may_view_agrees_with_the_rust_rule() {
    let store = fresh_store().await;
    let rust = rust_views(&store).await;
    // The cases, in the rule's words.
    let all = set(CONVERSATIONS.iter().map(|c| c.0));
    assert_eq!(rust["admin"], all, "an active admin sees everything");
    assert_eq!(rust["admin-off"], BTreeSet::new(), "inactive: nothing");
    assert_eq!(
        rust["o-off"],
        BTreeSet::new(),
        "inactive: not even what they hold"
    );
    assert_eq!(rust["o-view-all"], all, "a view-only group of all");
    assert_eq!(
        rust["o-none"],
        set(["c-held-none"]),
        "no group: what they hold"
    );
    assert_eq!(rust["o-view-tag"], set(["c-vip", "c-vip-held"]), "a tag");
    assert_eq!(
        rust["o-tag"],
        set(["c-vip", "c-vip-held"]),
        "a tag, reply too"
    );
    assert_eq!(rust["o-listed"], set(["c-listed"]), "a listing");

    let ids: Vec<&str> = USERS.iter().map(|u| u.0).collect();
    let conversation_ids: Vec<&str> = CONVERSATIONS.iter().map(|c| c.0).collect();
    let mut conn = store.pool().acquire().await.unwrap();
    let watchers = feed::watcher_access(&mut conn, CAMPAIGN, &ids, &conversation_ids)
        .await
        .unwrap();
    assert_eq!(watchers.len(), USERS.len());
    for watcher in watchers {
        let user = watcher.user.user_id.as_str();
        assert_eq!(set(watcher.viewable), rust[user], "feed: {user}");
    }
    for user in ids {
        let listed = conversations::list(
            &mut conn,
            CAMPAIGN,
            Some(user),
            &conversations::Filter::default(),
            None,
            100,
        )
        .await
        .unwrap();
        let listed = set(listed.into_iter().map(|c| c.conversation_id));
        assert_eq!(listed, rust[user], "ListConversations: {user}");
        let queue = waiting::list(&mut conn, CAMPAIGN, Some(user), None, 100)
            .await
            .unwrap();
        // Ranks count only what the user may view, in queue order.
        let ranks: Vec<i64> = queue.iter().map(|w| w.rank).collect();
        assert_eq!(ranks, (1..=queue.len() as i64).collect::<Vec<_>>());
        let queue = set(queue.into_iter().map(|w| w.conversation.conversation_id));
        assert_eq!(queue, rust[user], "ListWaitingConversations: {user}");
    }
}

#[tokio::test]
async fn eligibility_in_sql_agrees_with_the_previews_reasons() {
    let store = fresh_store().await;
    let mut conn = store.pool().acquire().await.unwrap();
    let everyone = preview::users(&mut conn, CAMPAIGN).await.unwrap();
    for (conversation, ..) in CONVERSATIONS {
        let repliers = preview::repliers(&mut conn, CAMPAIGN, Some(conversation))
            .await
            .unwrap();
        // The preview's candidates, full to capacity (so `AtCapacity` is among the reasons of everyone):
        // eligibility sets capacity aside.
        let rust = set(everyone
            .iter()
            .map(|user| Candidate {
                user_id: user.user_id.clone(),
                role: user.role,
                active: user.active,
                availability: user.availability,
                may_reply: repliers.contains(&user.user_id),
                load: Load {
                    open: 1,
                    capacity: 1,
                },
                lapsed: false,
                off_shift: None,
            })
            .filter(|c| c.reasons() == [Ineligible::AtCapacity])
            .map(|c| c.user_id));
        let sql = preview::eligible(&mut conn, CAMPAIGN, conversation)
            .await
            .unwrap();
        assert_eq!(set(sql), rust, "{conversation}");
        // Admins (even in a group), inactive, away and offline organizers, and those no group lets reply
        // never are.
        let expected = match *conversation {
            "c-vip" | "c-vip-held" => set(["o-reply-all", "o-tag"]),
            "c-listed" => set(["o-reply-all", "o-listed"]),
            _ => set(["o-reply-all"]),
        };
        assert_eq!(rust, expected, "{conversation}");
    }
}

#[tokio::test]
async fn a_new_settings_row_has_the_domains_defaults() {
    let store = fresh_store().await;
    let mut conn = store.pool().acquire().await.unwrap();
    // The campaign's lock makes its row, as every writer of the settings takes it first.
    let locked = assignment_service::store::auto_assign::lock(&mut conn, CAMPAIGN)
        .await
        .unwrap();
    assert!(!locked.auto_assign_enabled);
    assert_eq!(locked.on_unavailable, OnUnavailable::default());
    let change = SettingsChange {
        auto_assign_enabled: Some(true),
        ..SettingsChange::default()
    };
    let made = inbox_settings::update(&mut conn, CAMPAIGN, change, "admin")
        .await
        .unwrap();
    assert!(made.auto_assign_enabled);
    assert_eq!(made.updated_by.as_deref(), Some("admin"));
    assert_eq!(made.default_capacity, 0);
    assert_eq!(made.routing_mode, RoutingMode::default());
    assert_eq!(made.rotation_start, RotationStart::default());
    assert_eq!(made.on_unavailable, OnUnavailable::default());
    assert_eq!(made.replies, ReplySettings::default());
    assert_eq!(made.priority_step_seconds, DEFAULT_PRIORITY_STEP_SECONDS);
    assert_eq!(locked.priority_step_seconds, DEFAULT_PRIORITY_STEP_SECONDS);
    // Fields left unset keep their value.
    let change = SettingsChange {
        default_capacity: Some(3),
        ..SettingsChange::default()
    };
    let changed = inbox_settings::update(&mut conn, CAMPAIGN, change, "admin2")
        .await
        .unwrap();
    assert!(changed.auto_assign_enabled);
    assert_eq!(changed.default_capacity, 3);
    assert_eq!(changed.updated_by.as_deref(), Some("admin2"));
    let other = SettingsChange {
        default_capacity: Some(2),
        ..SettingsChange::default()
    };
    assignment_service::store::auto_assign::lock(&mut conn, "camp-2")
        .await
        .unwrap();
    let off = inbox_settings::update(&mut conn, "camp-2", other, "admin")
        .await
        .unwrap();
    assert!(!off.auto_assign_enabled, "off until switched on");
}

/// The history of `conversation` as written, in event-id order: (action, from, to, actor, source,
/// request id).
type Written = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
);

async fn written(store: &Store, conversation: &str) -> Vec<Written> {
    sqlx::query_as(
        "SELECT action, from_user_id, to_user_id, actor_id, source, request_id FROM assignment_events \
         WHERE campaign_id = $1 AND conversation_id = $2 ORDER BY event_id",
    )
    .bind(CAMPAIGN)
    .bind(conversation)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

fn event(action: &str, from: Option<&str>, to: Option<&str>, source: &str) -> Written {
    let some = |s: Option<&str>| s.map(str::to_owned);
    (
        action.into(),
        some(from),
        some(to),
        Some("admin".into()),
        source.into(),
        Some("req-1".into()),
    )
}

async fn waits(store: &Store, conversation: &str) -> bool {
    let mut conn = store.pool().acquire().await.unwrap();
    waiting::positions(&mut conn, CAMPAIGN, &[conversation])
        .await
        .unwrap()
        .contains_key(conversation)
}

#[tokio::test]
async fn an_assignment_or_a_resolve_takes_a_conversation_out_of_the_queue_with_its_event() {
    // In one ordered insert: LEFT_QUEUE, then the change (as a batch writes a drained conversation's).
    let store = fresh_store().await;
    let mut conn = store.pool().acquire().await.unwrap();
    let change = conversations::AssigneeChange {
        campaign_id: CAMPAIGN,
        conversation_id: "c-plain",
        action: AssignmentAction::Assign,
        from: None,
        to: Some("o-reply-all"),
        actor_id: "admin",
        source: AssignmentSource::Manual,
        request_id: Some("req-1"),
    };
    conversations::set_assignee(&mut conn, change)
        .await
        .unwrap();
    assert!(!waits(&store, "c-plain").await);
    assert_eq!(
        written(&store, "c-plain").await,
        [
            event("LEFT_QUEUE", None, None, "MANUAL"),
            event("ASSIGN", None, Some("o-reply-all"), "MANUAL"),
        ]
    );
    // An unassignment does not: the conversation stays where it waits.
    let change = conversations::AssigneeChange {
        conversation_id: "c-held-none",
        action: AssignmentAction::Unassign,
        from: Some("o-none"),
        to: None,
        ..change
    };
    conversations::set_assignee(&mut conn, change)
        .await
        .unwrap();
    assert!(waits(&store, "c-held-none").await);
    assert_eq!(
        written(&store, "c-held-none").await,
        [event("UNASSIGN", Some("o-none"), None, "MANUAL")]
    );
    // A resolve does, and records who held it; a reopen puts nothing back.
    for status in [ConversationStatus::Resolved, ConversationStatus::Open] {
        conversations::set_status(
            &mut conn,
            CAMPAIGN,
            "c-vip-held",
            status,
            "admin",
            Some("req-1"),
        )
        .await
        .unwrap();
    }
    assert!(!waits(&store, "c-vip-held").await);
    assert_eq!(
        written(&store, "c-vip-held").await,
        [
            event("LEFT_QUEUE", None, None, "MANUAL"),
            event("RESOLVE", Some("o-tag"), Some("o-tag"), "MANUAL"),
            event("REOPEN", Some("o-tag"), Some("o-tag"), "MANUAL"),
        ]
    );
}

#[tokio::test]
async fn availability_and_return_to_queue_events_say_whose_and_why() {
    let store = fresh_store().await;
    let mut conn = store.pool().acquire().await.unwrap();
    users::set_availability(
        &mut conn,
        CAMPAIGN,
        "o-none",
        Availability::Away,
        Some("admin"),
        Some("req-1"),
    )
    .await
    .unwrap();
    let (user, availability, actor, source, conversation): (
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT user_id, availability, actor_id, source, conversation_id FROM assignment_events \
         WHERE action = 'AVAILABILITY_CHANGED'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        (user, availability, actor, source, conversation),
        (
            Some("o-none".into()),
            Some("AWAY".into()),
            Some("admin".into()),
            "MANUAL".into(),
            None
        )
    );
    // c-held-none waits already: its UNASSIGN is recorded, and no second QUEUED.
    sqlx::query("DELETE FROM waiting_conversations WHERE conversation_id = 'c-held-off'")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE conversations SET assignee_id = 'o-none' WHERE conversation_id = 'c-held-off'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    // As every caller does: under the campaign's auto-assign lock, which makes its settings row (and queue
    // clock) on first use.
    auto_assign::lock(&mut conn, CAMPAIGN).await.unwrap();
    let held = waiting::lock_returnable(&mut conn, CAMPAIGN, "o-none")
        .await
        .unwrap();
    let held: Vec<&str> = held.iter().map(String::as_str).collect();
    let requeue = waiting::Requeue {
        conversation_ids: &held,
        cause: "RETURNED_TO_QUEUE",
        record_lapse: false,
        stop_timing: false,
        actor_id: Some("admin"),
        request_id: Some("req-1"),
    };
    let returned = waiting::requeue(&mut conn, CAMPAIGN, requeue)
        .await
        .unwrap();
    assert_eq!(returned, ["c-held-none", "c-held-off"].map(String::from));
    type Returned = (String, String, Option<String>, String, Option<String>);
    let causes: Vec<Returned> = sqlx::query_as(
        "SELECT conversation_id, action, from_user_id, source, cause FROM assignment_events \
         WHERE conversation_id IS NOT NULL ORDER BY event_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let returned = |conversation: &str, action: &str, from: Option<&str>| {
        (
            conversation.to_string(),
            action.to_string(),
            from.map(str::to_owned),
            "AUTO".to_string(),
            Some("RETURNED_TO_QUEUE".to_string()),
        )
    };
    assert_eq!(
        causes,
        [
            returned("c-held-none", "UNASSIGN", Some("o-none")),
            returned("c-held-off", "UNASSIGN", Some("o-none")),
            returned("c-held-off", "QUEUED", None),
        ]
    );
}

/// A conversation's reply due time: the SQL rule the timers fire by (`store::rules::reply_due`, read through
/// every conversation query) and the Rust one the auto-assign batch answers with agree, case by case.
#[tokio::test]
async fn the_reply_due_time_is_the_same_in_sql_and_in_rust() {
    use assignment_service::domain::replies::reply_due_at;
    use assignment_service::store::conversations;
    let store = fresh_store().await;
    let mut conn = store.pool().acquire().await.unwrap();
    // (id, awaiting since (seconds ago), assignee, assigned (seconds ago), status, lapsed by)
    type Case<'a> = (
        &'a str,
        Option<i32>,
        Option<&'a str>,
        Option<i32>,
        &'a str,
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (
            "due-from-message",
            Some(100),
            Some("o-reply-all"),
            Some(200),
            "OPEN",
            &[],
        ),
        (
            "due-from-assignment",
            Some(200),
            Some("o-reply-all"),
            Some(100),
            "OPEN",
            &[],
        ),
        (
            "nothing-unanswered",
            None,
            Some("o-reply-all"),
            Some(100),
            "OPEN",
            &[],
        ),
        ("nobody-holds-it", Some(100), None, None, "OPEN", &[]),
        (
            "resolved",
            Some(100),
            Some("o-reply-all"),
            Some(100),
            "RESOLVED",
            &[],
        ),
        (
            "holder-lapsed",
            Some(100),
            Some("o-reply-all"),
            Some(100),
            "OPEN",
            &["o-reply-all"],
        ),
        (
            "another-lapsed",
            Some(100),
            Some("o-reply-all"),
            Some(100),
            "OPEN",
            &["o-tag"],
        ),
    ];
    for (id, since, assignee, assigned, status, lapsed) in cases {
        sqlx::query(
            "INSERT INTO conversations (campaign_id, conversation_id, member_id, assignee_id, assigned_at, \
                                        status, awaiting_reply_since, lapsed_by) \
             VALUES ($1, $2, 'm', $3, now() - make_interval(secs => $4), $5, \
                     now() - make_interval(secs => $6), $7)",
        )
        .bind(CAMPAIGN)
        .bind(id)
        .bind(assignee)
        .bind(assigned.map(f64::from))
        .bind(status)
        .bind(since.map(f64::from))
        .bind(lapsed.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    for within in [None, Some(60)] {
        let locked = assignment_service::store::auto_assign::lock(&mut conn, CAMPAIGN)
            .await
            .unwrap();
        sqlx::query("UPDATE inbox_settings SET reply_within_seconds = $2 WHERE campaign_id = $1")
            .bind(CAMPAIGN)
            .bind(within)
            .execute(&mut *conn)
            .await
            .unwrap();
        let settings = ReplySettings {
            reply_within_seconds: within,
            ..locked.replies
        };
        let mut timed = 0;
        for (id, ..) in cases {
            let stored = conversations::find(&mut conn, CAMPAIGN, id)
                .await
                .unwrap()
                .unwrap();
            let rust = reply_due_at(&stored, &settings);
            assert_eq!(stored.reply_due_at, rust, "{id} within {within:?}");
            timed += usize::from(rust.is_some());
        }
        assert_eq!(
            timed,
            if within.is_some() { 3 } else { 0 },
            "within {within:?}"
        );
    }
}
