//! Routing that knows who is there: availability, capacity, balanced mode, and the preview.

use assignment_service::pb;
use tonic::Code;

use crate::harness::*;

const ORGANIZERS: [&str; 3] = ["org-a", "org-b", "org-c"];

/// Admin "admin"; organizers org-a..c who may reply to everything; auto-assignment on with `settings`.
async fn campaign(settings: pb::UpdateInboxSettingsRequest) -> TestApp {
    let app = TestApp::start().await;
    app.admin("admin").await;
    for org in ORGANIZERS {
        app.organizer(org).await;
    }
    app.group("admin", "Inbox team", &ORGANIZERS, true, scope_all())
        .await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            auto_assign_enabled: Some(true),
            ..settings
        },
    )
    .await;
    app
}

/// Auto-assigns a new conversation: its outcome and assignee.
async fn route(app: &TestApp, conversation: &str) -> (pb::AutoAssignOutcome, Option<String>) {
    let reply = app.auto_assign(conversation).await;
    (reply.outcome(), reply.assignee_id)
}

async fn assignee(app: &TestApp, conversation: &str) -> String {
    let (outcome, assignee) = route(app, conversation).await;
    assert_eq!(outcome, pb::AutoAssignOutcome::Assigned);
    assignee.unwrap()
}

fn availability(user: &str, availability: pb::Availability) -> pb::SetAvailabilityRequest {
    pb::SetAvailabilityRequest {
        user_id: user.into(),
        availability: availability.into(),
    }
}

async fn set_capacity(app: &TestApp, user: &str, capacity: Option<i32>) -> pb::User {
    app.assignments()
        .await
        .set_capacity(as_actor(
            "admin",
            pb::SetCapacityRequest {
                user_id: user.into(),
                capacity,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

#[tokio::test]
async fn organizers_set_their_own_availability_admins_and_systems_anyones_and_history_records_it() {
    let app = campaign(Default::default()).await;
    let mut client = app.assignments().await;
    use pb::Availability::{Available, Away, Offline};
    let set = client
        .set_availability(as_actor("org-a", availability("", Away)))
        .await
        .unwrap()
        .into_inner();
    assert!(set.changed);
    assert_eq!(set.user.unwrap().availability(), Away);
    let status = expect_code(
        client
            .set_availability(as_actor("org-a", availability("org-b", Away)))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "ADMIN_REQUIRED");
    client
        .set_availability(as_actor("admin", availability("org-b", Offline)))
        .await
        .unwrap();
    // The presence tracker: a system caller, no actor.
    let again = client
        .set_availability(system(CAMPAIGN, availability("org-b", Offline)))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed, "already offline: nothing written");
    client
        .set_availability(system(CAMPAIGN, availability("org-b", Available)))
        .await
        .unwrap();
    expect_code(
        client
            .set_availability(system(CAMPAIGN, availability("", Away)))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        client
            .set_availability(system(CAMPAIGN, availability("ghost", Away)))
            .await,
        Code::NotFound,
    );
    expect_code(
        client
            .set_availability(as_actor(
                "org-a",
                availability("", pb::Availability::Unspecified),
            ))
            .await,
        Code::InvalidArgument,
    );

    let history = client
        .list_assignment_history(as_actor(
            "admin",
            pb::ListAssignmentHistoryRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let changes: Vec<(String, pb::Availability, Option<String>)> = history
        .iter()
        .filter(|e| e.action() == pb::AssignmentAction::AvailabilityChanged)
        .map(|e| (e.user_id.clone(), e.availability(), e.actor_id.clone()))
        .collect();
    assert_eq!(
        changes,
        vec![
            ("org-a".into(), Away, Some("org-a".into())),
            ("org-b".into(), Offline, Some("admin".into())),
            ("org-b".into(), Available, None),
        ]
    );
}

#[tokio::test]
async fn only_available_organizers_are_auto_assigned() {
    let app = campaign(Default::default()).await;
    let mut client = app.assignments().await;
    client
        .set_availability(as_actor("org-a", availability("", pb::Availability::Away)))
        .await
        .unwrap();
    client
        .set_availability(system(
            CAMPAIGN,
            availability("org-c", pb::Availability::Offline),
        ))
        .await
        .unwrap();
    assert_eq!(assignee(&app, "c1").await, "org-b");
    assert_eq!(assignee(&app, "c2").await, "org-b");
    client
        .set_availability(system(
            CAMPAIGN,
            availability("org-b", pb::Availability::Away),
        ))
        .await
        .unwrap();
    let (outcome, _) = route(&app, "c3").await;
    assert_eq!(
        outcome,
        pb::AutoAssignOutcome::Queued,
        "nobody is available"
    );
    // org-a coming back takes the waiting conversation at once, then new ones.
    client
        .set_availability(as_actor(
            "org-a",
            availability("", pb::Availability::Available),
        ))
        .await
        .unwrap();
    assert_eq!(assigned_soon(&app, "c3").await.as_deref(), Some("org-a"));
    assert_eq!(assignee(&app, "c4").await, "org-a");
}

/// The conversation's assignee once a drain placed it (drains run just after the freeing commit).
pub async fn assigned_soon(app: &TestApp, conversation: &str) -> Option<String> {
    for _ in 0..500 {
        if let Some(assignee) = app.stored(conversation).await.0 {
            return Some(assignee);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn capacity_skips_full_organizers_counts_only_open_conversations_and_binds_only_auto_assignment()
 {
    let app = campaign(pb::UpdateInboxSettingsRequest {
        default_capacity: Some(1),
        ..Default::default()
    })
    .await;
    let org_c = set_capacity(&app, "org-c", Some(2)).await;
    assert_eq!(org_c.capacity, Some(2));
    let got: Vec<String> = [
        assignee(&app, "c1").await,
        assignee(&app, "c2").await,
        assignee(&app, "c3").await,
        assignee(&app, "c4").await,
    ]
    .to_vec();
    assert_eq!(got, vec!["org-a", "org-b", "org-c", "org-c"]);
    let (outcome, _) = route(&app, "c5").await;
    assert_eq!(outcome, pb::AutoAssignOutcome::Queued, "everyone is full");

    // Resolved conversations do not count: org-a has room again, and the waiting c5 takes it.
    let mut client = app.assignments().await;
    client
        .resolve_conversation(as_actor(
            "admin",
            pb::ResolveConversationRequest {
                conversation_id: "c1".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(assigned_soon(&app, "c5").await.as_deref(), Some("org-a"));
    let (outcome, _) = route(&app, "c6").await;
    assert_eq!(outcome, pb::AutoAssignOutcome::Queued, "full again");

    // An admin may go past capacity by hand.
    app.conversation("manual", &[]).await;
    client
        .assign_conversation(as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "manual".into(),
                assignee_id: "org-b".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    // Clearing org-c's own capacity brings back the default (1): still full, c6 still waits.
    assert_eq!(set_capacity(&app, "org-c", None).await.capacity, None);
    let (outcome, _) = route(&app, "c7").await;
    assert_eq!(outcome, pb::AutoAssignOutcome::Queued);
    assert_eq!(app.stored("c6").await.0, None);
    // Only admins set capacities, never on admins, never negative.
    expect_code(
        client
            .set_capacity(as_actor(
                "org-a",
                pb::SetCapacityRequest {
                    user_id: "org-a".into(),
                    capacity: Some(9),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    for (user, capacity) in [("admin", Some(3)), ("org-a", Some(-1))] {
        expect_code(
            client
                .set_capacity(as_actor(
                    "admin",
                    pb::SetCapacityRequest {
                        user_id: user.into(),
                        capacity,
                    },
                ))
                .await,
            Code::InvalidArgument,
        );
    }
}

#[tokio::test]
async fn balanced_mode_gives_the_least_loaded_organizer_ties_round_robin() {
    let app = campaign(pb::UpdateInboxSettingsRequest {
        routing_mode: pb::RoutingMode::Balanced.into(),
        ..Default::default()
    })
    .await;
    // org-a already holds two conversations, given by hand.
    for id in ["held-1", "held-2"] {
        app.conversation(id, &[]).await;
        app.assignments()
            .await
            .assign_conversation(as_actor(
                "admin",
                pb::AssignConversationRequest {
                    conversation_id: id.into(),
                    assignee_id: "org-a".into(),
                    expected_version: None,
                },
            ))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for i in 0..6 {
        got.push(assignee(&app, &format!("c{i}")).await);
    }
    // b and c catch up with a (2 each), then all three take turns after the last assigned.
    assert_eq!(
        got,
        vec!["org-b", "org-c", "org-b", "org-c", "org-a", "org-b"]
    );
}

#[tokio::test]
async fn the_preview_says_who_is_next_and_why_not_everyone_else() {
    let app = campaign(pb::UpdateInboxSettingsRequest {
        default_capacity: Some(1),
        ..Default::default()
    })
    .await;
    app.organizer("org-d").await; // in no access group
    app.organizer("org-e").await;
    app.deactivate("org-e").await;
    let mut client = app.assignments().await;
    client
        .set_availability(system(
            CAMPAIGN,
            availability("org-b", pb::Availability::Offline),
        ))
        .await
        .unwrap();
    assert_eq!(assignee(&app, "c1").await, "org-a");
    let preview = client
        .preview_auto_assign(as_actor("admin", pb::PreviewAutoAssignRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.next_assignee_id.as_deref(), Some("org-c"));
    use pb::IneligibleReason as R;
    let reasons: Vec<(String, Vec<R>)> = preview
        .candidates
        .iter()
        .map(|c| (c.user_id.clone(), c.reasons().collect()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("admin".into(), vec![R::Admin]),
            ("org-a".into(), vec![R::AtCapacity]),
            ("org-b".into(), vec![R::Offline]),
            ("org-c".into(), vec![]),
            ("org-d".into(), vec![R::NoReplyAccess]),
            ("org-e".into(), vec![R::Inactive, R::NoReplyAccess]),
        ]
    );
    let org_a = &preview.candidates[1];
    assert_eq!((org_a.open_conversations, org_a.capacity), (1, 1));
    assert!(
        org_a.explanation.contains("1 of 1"),
        "{}",
        org_a.explanation
    );
    // The preview changed nothing, and is for admins.
    assert_eq!(app.count("assignment_events").await, 2);
    expect_code(
        client
            .preview_auto_assign(as_actor("org-a", pb::PreviewAutoAssignRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    // For a given conversation, the groups that cover it decide who may reply.
    app.conversation("tagged", &["vip"]).await;
    app.group("admin", "VIP", &["org-d"], true, scope_tags(&["vip"]))
        .await;
    let preview = client
        .preview_auto_assign(as_actor(
            "admin",
            pb::PreviewAutoAssignRequest {
                conversation_id: "tagged".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let org_d = preview
        .candidates
        .iter()
        .find(|c| c.user_id == "org-d")
        .unwrap();
    assert!(org_d.reasons.is_empty(), "{org_d:?}");
}
