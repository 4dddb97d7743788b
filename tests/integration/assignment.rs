//! The assignment rules of the help article, end to end.

use assignment_service::pb;
use tonic::Code;

use crate::harness::*;

/// A campaign with an admin, two organizers in an all-conversations group (view + reply), one organizer
/// with no group, and conversation "c1".
async fn campaign() -> TestApp {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.admin("admin2").await;
    app.organizer("org1").await;
    app.organizer("org2").await;
    app.organizer("outsider").await;
    app.conversation("c1", &["volunteer"]).await;
    app.group("admin", "Field team", &["org1", "org2"], true, scope_all())
        .await;
    app
}

fn assign(conversation: &str, assignee: &str) -> pb::AssignConversationRequest {
    pb::AssignConversationRequest {
        conversation_id: conversation.into(),
        assignee_id: assignee.into(),
        expected_version: None,
    }
}

fn unassign(conversation: &str) -> pb::UnassignConversationRequest {
    pb::UnassignConversationRequest {
        return_to_queue: false,
        conversation_id: conversation.into(),
        expected_version: None,
    }
}

fn reassign(conversation: &str, assignee: &str) -> pb::ReassignConversationRequest {
    pb::ReassignConversationRequest {
        conversation_id: conversation.into(),
        assignee_id: assignee.into(),
        expected_version: None,
    }
}

#[tokio::test]
async fn admin_assigns_to_organizers_other_admins_and_themselves() {
    let app = campaign().await;
    app.conversation("c2", &[]).await;
    app.conversation("c3", &[]).await;
    let mut client = app.assignments().await;
    for (conversation, assignee) in [("c1", "org1"), ("c2", "admin2"), ("c3", "admin")] {
        let reply = client
            .assign_conversation(as_actor("admin", assign(conversation, assignee)))
            .await
            .unwrap()
            .into_inner();
        assert!(reply.changed);
        let conv = reply.conversation.unwrap();
        assert_eq!(conv.assignee_id.as_deref(), Some(assignee));
        assert_eq!(conv.assigned_by.as_deref(), Some("admin"));
        assert!(conv.assigned_at.is_some());
        assert_eq!(app.stored(conversation).await.0.as_deref(), Some(assignee));
    }
    let events = app.history("c1").await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.action(), pb::AssignmentAction::Assign);
    assert_eq!(event.source(), pb::AssignmentSource::Manual);
    assert_eq!(event.from_user_id, None);
    assert_eq!(event.to_user_id.as_deref(), Some("org1"));
    assert_eq!(event.actor_id.as_deref(), Some("admin"));
}

#[tokio::test]
async fn admin_needs_reassign_to_take_a_conversation_from_its_holder() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("admin", assign("c1", "org1")))
        .await
        .unwrap();
    let before = app.stored("c1").await;
    let status = expect_code(
        client
            .assign_conversation(as_actor("admin", assign("c1", "org2")))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "ALREADY_ASSIGNED");
    assert!(status.message().contains("ReassignConversation"));
    assert_eq!(
        app.stored("c1").await,
        before,
        "a refused call changes nothing"
    );
    assert_eq!(app.history("c1").await.len(), 1);

    let moved = client
        .reassign_conversation(as_actor("admin", reassign("c1", "org2")))
        .await
        .unwrap()
        .into_inner();
    assert!(moved.changed);
    assert_eq!(
        moved.conversation.unwrap().assignee_id.as_deref(),
        Some("org2")
    );
    let events = app.history("c1").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].action(), pb::AssignmentAction::Reassign);
    assert_eq!(events[1].from_user_id.as_deref(), Some("org1"));
    assert_eq!(events[1].to_user_id.as_deref(), Some("org2"));
}

#[tokio::test]
async fn admin_unassigns_anyones_conversation() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("org1", assign("c1", "org1")))
        .await
        .unwrap();
    let reply = client
        .unassign_conversation(as_actor("admin", unassign("c1")))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.changed);
    let conv = reply.conversation.unwrap();
    assert_eq!(conv.assignee_id, None);
    assert_eq!(conv.assigned_at, None);
    assert_eq!(conv.assigned_by, None);
    let events = app.history("c1").await;
    assert_eq!(events[1].action(), pb::AssignmentAction::Unassign);
    assert_eq!(events[1].from_user_id.as_deref(), Some("org1"));
    assert_eq!(events[1].to_user_id, None);

    // Unassigning what nobody holds succeeds without writing.
    let again = client
        .unassign_conversation(as_actor("admin", unassign("c1")))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed);
    assert_eq!(app.history("c1").await.len(), 2);
}

#[tokio::test]
async fn reassign_needs_an_assigned_conversation() {
    let app = campaign().await;
    let status = expect_code(
        app.assignments()
            .await
            .reassign_conversation(as_actor("admin", reassign("c1", "org1")))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "NOT_ASSIGNED");
    assert_eq!(app.stored("c1").await.0, None);
}

#[tokio::test]
async fn organizer_assigns_a_viewable_conversation_to_themselves() {
    let app = campaign().await;
    let reply = app
        .assignments()
        .await
        .assign_conversation(as_actor("org1", assign("c1", "org1")))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.changed);
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("org1"));
    assert_eq!(app.history("c1").await[0].actor_id.as_deref(), Some("org1"));
}

#[tokio::test]
async fn organizer_cannot_assign_to_someone_else() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    for target in ["org2", "admin"] {
        let status = expect_code(
            client
                .assign_conversation(as_actor("org1", assign("c1", target)))
                .await,
            Code::PermissionDenied,
        );
        assert_eq!(reason(&status), "ORGANIZER_ASSIGNS_SELF_ONLY");
    }
    assert_eq!(app.stored("c1").await.0, None);
    assert_eq!(app.count("assignment_events").await, 0);
}

#[tokio::test]
async fn organizer_without_view_access_cannot_assign_themselves() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    let hidden = expect_code(
        client
            .assign_conversation(as_actor("outsider", assign("c1", "outsider")))
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&hidden), "CONVERSATION_NOT_FOUND");
    let missing = expect_code(
        client
            .assign_conversation(as_actor("outsider", assign("c-404", "outsider")))
            .await,
        Code::NotFound,
    );
    assert_same_as_missing(&hidden, "c1", &missing, "c-404");
    assert_eq!(app.stored("c1").await.0, None);
}

#[tokio::test]
async fn organizer_cannot_take_a_conversation_someone_else_holds() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("org2", assign("c1", "org2")))
        .await
        .unwrap();
    let status = expect_code(
        client
            .assign_conversation(as_actor("org1", assign("c1", "org1")))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "ALREADY_ASSIGNED");
    assert!(status.message().contains("org2"));
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("org2"));
}

#[tokio::test]
async fn assigning_oneself_again_is_a_no_op_success() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("org1", assign("c1", "org1")))
        .await
        .unwrap();
    let version = app.stored("c1").await.2;
    let again = client
        .assign_conversation(as_actor("org1", assign("c1", "org1")))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed);
    assert_eq!(again.conversation.unwrap().version, version);
    assert_eq!(app.stored("c1").await.2, version);
    assert_eq!(app.history("c1").await.len(), 1);
}

#[tokio::test]
async fn organizer_unassigns_only_their_own_conversations() {
    let app = campaign().await;
    app.conversation("c2", &[]).await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("org1", assign("c1", "org1")))
        .await
        .unwrap();
    client
        .assign_conversation(as_actor("org2", assign("c2", "org2")))
        .await
        .unwrap();

    let status = expect_code(
        client
            .unassign_conversation(as_actor("org1", unassign("c2")))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "ORGANIZER_UNASSIGNS_OWN_ONLY");
    assert_eq!(app.stored("c2").await.0.as_deref(), Some("org2"));

    let own = client
        .unassign_conversation(as_actor("org1", unassign("c1")))
        .await
        .unwrap()
        .into_inner();
    assert!(own.changed);
    assert_eq!(app.stored("c1").await.0, None);
}

#[tokio::test]
async fn organizers_never_reassign() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("admin", assign("c1", "org2")))
        .await
        .unwrap();
    for target in ["org1", "org2"] {
        let status = expect_code(
            client
                .reassign_conversation(as_actor("org1", reassign("c1", target)))
                .await,
            Code::PermissionDenied,
        );
        assert_eq!(reason(&status), "ORGANIZERS_CANNOT_REASSIGN");
    }
    // Not even a conversation they hold themselves.
    client
        .reassign_conversation(as_actor("admin", reassign("c1", "org1")))
        .await
        .unwrap();
    expect_code(
        client
            .reassign_conversation(as_actor("org1", reassign("c1", "org2")))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("org1"));
}

#[tokio::test]
async fn unknown_and_inactive_assignees_are_refused() {
    let app = campaign().await;
    app.deactivate("org2").await;
    let mut client = app.assignments().await;
    let status = expect_code(
        client
            .assign_conversation(as_actor("admin", assign("c1", "ghost")))
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "ASSIGNEE_NOT_FOUND");
    let status = expect_code(
        client
            .assign_conversation(as_actor("admin", assign("c1", "org2")))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "ASSIGNEE_INACTIVE");
    assert_eq!(app.stored("c1").await.0, None);
    assert_eq!(app.count("assignment_events").await, 0);
}

#[tokio::test]
async fn resolving_and_reopening_never_change_the_assignee() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("org1", assign("c1", "org1")))
        .await
        .unwrap();
    let resolved = client
        .resolve_conversation(as_actor(
            "org1",
            pb::ResolveConversationRequest {
                conversation_id: "c1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(resolved.changed);
    let conv = resolved.conversation.unwrap();
    assert_eq!(conv.status(), pb::ConversationStatus::Resolved);
    assert_eq!(conv.assignee_id.as_deref(), Some("org1"));
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("org1"));

    // Another organizer cannot change the status of a conversation org1 holds.
    let status = expect_code(
        client
            .reopen_conversation(as_actor(
                "org2",
                pb::ReopenConversationRequest {
                    conversation_id: "c1".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "ASSIGNED_TO_OTHER");
    assert_eq!(app.stored("c1").await.1, "RESOLVED");

    let reopened = client
        .reopen_conversation(as_actor(
            "admin",
            pb::ReopenConversationRequest {
                conversation_id: "c1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reopened.conversation.unwrap().status(),
        pb::ConversationStatus::Open
    );
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("org1"));
    // History records the status changes, and that the assignee stayed.
    let history: Vec<(pb::AssignmentAction, Option<String>)> = app
        .history("c1")
        .await
        .iter()
        .map(|e| (e.action(), e.to_user_id.clone()))
        .collect();
    use pb::AssignmentAction::{Assign, Reopen, Resolve};
    assert_eq!(
        history,
        vec![
            (Assign, Some("org1".into())),
            (Resolve, Some("org1".into())),
            (Reopen, Some("org1".into())),
        ]
    );
}

#[tokio::test]
async fn actors_are_authenticated_against_the_directory() {
    let app = campaign().await;
    app.deactivate("org2").await;
    let mut client = app.assignments().await;

    let status = expect_code(
        client
            .assign_conversation(as_actor("nobody", assign("c1", "nobody")))
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&status), "ACTOR_UNKNOWN");

    let status = expect_code(
        client
            .assign_conversation(as_actor("org2", assign("c1", "org2")))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "ACTOR_INACTIVE");

    let status = expect_code(
        client
            .assign_conversation(system(CAMPAIGN, assign("c1", "org1")))
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(reason(&status), "ACTOR_MISSING");

    expect_code(
        client
            .assign_conversation(tonic::Request::new(assign("c1", "org1")))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(app.stored("c1").await.0, None);
    assert_eq!(app.count("assignment_events").await, 0);
}

#[tokio::test]
async fn the_role_comes_from_the_directory_not_the_caller() {
    let app = campaign().await;
    let mut request = as_actor("org1", reassign("c1", "org1"));
    request
        .metadata_mut()
        .insert("x-actor-role", "ADMIN".parse().unwrap());
    app.assignments()
        .await
        .assign_conversation(as_actor("admin", assign("c1", "org2")))
        .await
        .unwrap();
    expect_code(
        app.assignments().await.reassign_conversation(request).await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn conversations_of_another_campaign_are_not_found() {
    let app = campaign().await;
    app.conversation_in("camp-2", "c-other", &[]).await;
    let mut client = app.assignments().await;
    let status = expect_code(
        client
            .assign_conversation(as_actor("admin", assign("c-other", "admin")))
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "CONVERSATION_NOT_FOUND");
    expect_code(
        client
            .get_conversation(as_actor(
                "admin",
                pb::GetConversationRequest {
                    conversation_id: "c-other".into(),
                },
            ))
            .await,
        Code::NotFound,
    );
    // The admin of camp-1 is nobody in camp-2.
    expect_code(
        client
            .assign_conversation(as_actor_in("camp-2", "admin", assign("c-other", "admin")))
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_and_changes_nothing() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    let long_id = "x".repeat(129);
    let cases = [
        (assign("", "org1"), "conversation_id"),
        (assign("c1", ""), "assignee_id"),
        (assign(&long_id, "org1"), "conversation_id"),
        (assign("c1", &long_id), "assignee_id"),
        (assign("c 1", "org1"), "conversation_id"),
    ];
    for (request, field) in cases {
        let status = expect_code(
            client.assign_conversation(as_actor("admin", request)).await,
            Code::InvalidArgument,
        );
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            field
        );
    }
    let mut bad_header = as_actor("admin", assign("c1", "org1"));
    bad_header
        .metadata_mut()
        .insert("x-campaign-id", long_id.parse().unwrap());
    expect_code(
        client.assign_conversation(bad_header).await,
        Code::InvalidArgument,
    );
    expect_code(
        client
            .assign_conversation(as_actor("admin", assign("nope", "org1")))
            .await,
        Code::NotFound,
    );
    assert_eq!(app.stored("c1").await.0, None);
    assert_eq!(app.count("assignment_events").await, 0);
}

#[tokio::test]
async fn a_stale_expected_version_is_aborted() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    let version = app.stored("c1").await.2;
    let mut request = assign("c1", "org1");
    request.expected_version = Some(version + 5);
    let status = expect_code(
        client.assign_conversation(as_actor("admin", request)).await,
        Code::Aborted,
    );
    assert_eq!(reason(&status), "VERSION_MISMATCH");
    assert_eq!(app.stored("c1").await.0, None);

    let mut request = assign("c1", "org1");
    request.expected_version = Some(version);
    let reply = client
        .assign_conversation(as_actor("admin", request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.conversation.unwrap().version, version + 1);
}

#[tokio::test]
async fn racing_assignments_of_one_conversation_have_one_winner() {
    let app = campaign().await;
    let organizers: Vec<String> = (0..12).map(|i| format!("racer{i}")).collect();
    for org in &organizers {
        app.organizer(org).await;
    }
    let ids: Vec<&str> = organizers.iter().map(String::as_str).collect();
    app.group("admin", "Racers", &ids, true, scope_all()).await;
    let channel = app.channel().await;
    let calls = organizers.iter().map(|org| {
        let mut client =
            pb::assignment_service_client::AssignmentServiceClient::new(channel.clone());
        let org = org.clone();
        tokio::spawn(async move {
            client
                .assign_conversation(as_actor(&org, assign("c1", &org)))
                .await
                .map(|r| r.into_inner().conversation.unwrap().assignee_id.unwrap())
        })
    });
    let results = futures_join(calls).await;
    let winners: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one organizer gets it: {results:?}"
    );
    for loser in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(loser.code(), Code::FailedPrecondition);
        assert!(
            loser.message().contains(winners[0].as_str()),
            "the loser sees the winner"
        );
    }
    assert_eq!(app.stored("c1").await.0.as_ref(), Some(winners[0]));
    assert_eq!(app.history("c1").await.len(), 1);
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn racing_unassign_and_reassign_never_lose_an_update() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("admin", assign("c1", "org1")))
        .await
        .unwrap();
    let version = app.stored("c1").await.2;
    let channel = app.channel().await;
    // Two admins act on the same version: exactly one wins, the other is told to re-read.
    let mut first = pb::assignment_service_client::AssignmentServiceClient::new(channel.clone());
    let mut second = pb::assignment_service_client::AssignmentServiceClient::new(channel);
    let a = tokio::spawn(async move {
        let mut request = reassign("c1", "org2");
        request.expected_version = Some(version);
        first
            .reassign_conversation(as_actor("admin", request))
            .await
            .map(|_| ())
    });
    let b = tokio::spawn(async move {
        let mut request = unassign("c1");
        request.expected_version = Some(version);
        second
            .unassign_conversation(as_actor("admin2", request))
            .await
            .map(|_| ())
    });
    let results = [a.await.unwrap(), b.await.unwrap()];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(loser.code(), Code::Aborted);
    assert_eq!(app.stored("c1").await.2, version + 1);
    assert_eq!(app.history("c1").await.len(), 2);
}

#[tokio::test]
async fn reply_permission_follows_the_grey_send_button_rules() {
    let app = campaign().await;
    app.organizer("viewer").await;
    app.group("admin", "View only", &["viewer"], false, scope_all())
        .await;
    app.conversation("c2", &[]).await;
    app.conversation("c3", &[]).await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("org1", assign("c1", "org1")))
        .await
        .unwrap();
    client
        .assign_conversation(as_actor("admin", assign("c3", "viewer")))
        .await
        .unwrap();

    let check = |actor: &'static str, conversation: &'static str, user: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .check_reply_permission(as_actor(
                    actor,
                    pb::CheckReplyPermissionRequest {
                        conversation_id: conversation.into(),
                        user_id: user.into(),
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    use pb::ReplyPermissionReason as R;
    let cases = [
        ("admin", "c1", "", true, R::Admin),
        ("org1", "c1", "", true, R::AssignedToUser),
        ("org2", "c1", "", false, R::AssignedToOther),
        ("org1", "c2", "", false, R::NotAssigned),
        ("viewer", "c3", "", false, R::NoReplyAccess),
        ("admin", "c1", "org2", false, R::AssignedToOther),
    ];
    for (actor, conversation, user, allowed, expected) in cases {
        let answer = check(actor, conversation, user).await.unwrap();
        assert_eq!(answer.allowed, allowed, "{actor} on {conversation}");
        assert_eq!(answer.reason(), expected, "{actor} on {conversation}");
        assert!(!answer.message.is_empty());
    }
    let holder = check("org2", "c1", "").await.unwrap();
    assert_eq!(holder.assignee_id.as_deref(), Some("org1"));

    app.deactivate("org1").await;
    let inactive = check("admin", "c1", "org1").await.unwrap();
    assert_eq!(inactive.reason(), R::UserInactive);
    assert!(!inactive.allowed);

    let status = expect_code(check("org2", "c1", "org1").await, Code::PermissionDenied);
    assert_eq!(reason(&status), "ADMIN_REQUIRED");
    // An organizer who cannot see the conversation learns nothing about it, not even that it exists.
    let hidden = expect_code(check("outsider", "c1", "").await, Code::NotFound);
    let missing = expect_code(check("outsider", "c-404", "").await, Code::NotFound);
    assert_same_as_missing(&hidden, "c1", &missing, "c-404");
    assert!(!hidden.message().contains("org1"));
    expect_code(check("admin", "c1", "ghost").await, Code::NotFound);
    expect_code(check("admin", "ghost", "").await, Code::NotFound);
}

#[tokio::test]
async fn get_conversation_respects_view_access() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    let get = |id: &str| pb::GetConversationRequest {
        conversation_id: id.into(),
    };
    let conv = client
        .get_conversation(as_actor("org1", get("c1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(conv.conversation.unwrap().member_tags, vec!["volunteer"]);
    let hidden = expect_code(
        client
            .get_conversation(as_actor("outsider", get("c1")))
            .await,
        Code::NotFound,
    );
    let missing = expect_code(
        client
            .get_conversation(as_actor("outsider", get("c-404")))
            .await,
        Code::NotFound,
    );
    assert_same_as_missing(&hidden, "c1", &missing, "c-404");
    // An organizer sees what an admin assigned to them even without a group.
    client
        .assign_conversation(as_actor("admin", assign("c1", "outsider")))
        .await
        .unwrap();
    client
        .get_conversation(as_actor("outsider", get("c1")))
        .await
        .unwrap();
}

#[tokio::test]
async fn list_conversations_filters_and_pages() {
    let app = campaign().await;
    for i in 0..7 {
        app.conversation(&format!("d{i}"), &[]).await;
    }
    let mut client = app.assignments().await;
    for i in [0, 2, 4] {
        client
            .assign_conversation(as_actor("admin", assign(&format!("d{i}"), "org1")))
            .await
            .unwrap();
    }
    client
        .resolve_conversation(as_actor(
            "admin",
            pb::ResolveConversationRequest {
                conversation_id: "d2".into(),
            },
        ))
        .await
        .unwrap();

    let lister = client.clone();
    let list = |request: pb::ListConversationsRequest, actor: &'static str| {
        let mut client = lister.clone();
        async move {
            client
                .list_conversations(as_actor(actor, request))
                .await
                .map(|r| r.into_inner())
        }
    };
    let ids = |reply: &pb::ListConversationsResponse| {
        reply
            .conversations
            .iter()
            .map(|c| c.conversation_id.clone())
            .collect::<Vec<_>>()
    };

    let mine = list(
        pb::ListConversationsRequest {
            assignee_id: "org1".into(),
            ..Default::default()
        },
        "admin",
    )
    .await
    .unwrap();
    assert_eq!(ids(&mine), vec!["d0", "d2", "d4"]);

    let open_mine = list(
        pb::ListConversationsRequest {
            assignee_id: "org1".into(),
            status: pb::ConversationStatus::Open.into(),
            ..Default::default()
        },
        "admin",
    )
    .await
    .unwrap();
    assert_eq!(ids(&open_mine), vec!["d0", "d4"]);

    // Pages of 3 over the 5 unassigned conversations (c1, d1, d3, d5, d6).
    let first = list(
        pb::ListConversationsRequest {
            unassigned: true,
            page_size: 3,
            ..Default::default()
        },
        "admin",
    )
    .await
    .unwrap();
    assert_eq!(ids(&first), vec!["c1", "d1", "d3"]);
    assert!(!first.next_page_token.is_empty());
    let second = list(
        pb::ListConversationsRequest {
            unassigned: true,
            page_size: 3,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        },
        "admin",
    )
    .await
    .unwrap();
    assert_eq!(ids(&second), vec!["d5", "d6"]);
    assert!(second.next_page_token.is_empty());

    // An organizer with no group sees only what is assigned to them.
    client
        .assign_conversation(as_actor("admin", assign("d6", "outsider")))
        .await
        .unwrap();
    let outsider = list(pb::ListConversationsRequest::default(), "outsider")
        .await
        .unwrap();
    assert_eq!(ids(&outsider), vec!["d6"]);
    let org = list(pb::ListConversationsRequest::default(), "org1")
        .await
        .unwrap();
    assert_eq!(org.conversations.len(), 8);

    let status = expect_code(
        list(
            pb::ListConversationsRequest {
                assignee_id: "org1".into(),
                unassigned: true,
                ..Default::default()
            },
            "admin",
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("not both"));
    expect_code(
        list(
            pb::ListConversationsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "admin",
        )
        .await,
        Code::InvalidArgument,
    );
    expect_code(
        list(
            pb::ListConversationsRequest {
                page_size: -1,
                ..Default::default()
            },
            "admin",
        )
        .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn history_is_paged_oldest_first_and_campaign_wide_for_admins_only() {
    let app = campaign().await;
    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor("admin", assign("c1", "org1")))
        .await
        .unwrap();
    client
        .reassign_conversation(as_actor("admin", reassign("c1", "org2")))
        .await
        .unwrap();
    client
        .unassign_conversation(as_actor("admin", unassign("c1")))
        .await
        .unwrap();

    let page = |token: String| pb::ListAssignmentHistoryRequest {
        conversation_id: String::new(),
        page_size: 2,
        page_token: token,
    };
    let first = client
        .list_assignment_history(as_actor("admin", page(String::new())))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_assignment_history(as_actor("admin", page(first.next_page_token.clone())))
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<_> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|e| e.action())
        .collect();
    use pb::AssignmentAction as A;
    assert_eq!(actions, vec![A::Assign, A::Reassign, A::Unassign]);
    assert!(second.next_page_token.is_empty());

    let status = expect_code(
        client
            .list_assignment_history(as_actor("org1", page(String::new())))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "ADMIN_REQUIRED");
    // Organizers read the history of conversations they can view.
    let own = client
        .list_assignment_history(as_actor(
            "org1",
            pb::ListAssignmentHistoryRequest {
                conversation_id: "c1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.events.len(), 3);
    let history_of = |id: &str| {
        as_actor(
            "outsider",
            pb::ListAssignmentHistoryRequest {
                conversation_id: id.into(),
                ..Default::default()
            },
        )
    };
    let hidden = expect_code(
        client.list_assignment_history(history_of("c1")).await,
        Code::NotFound,
    );
    let missing = expect_code(
        client.list_assignment_history(history_of("c-404")).await,
        Code::NotFound,
    );
    assert_same_as_missing(&hidden, "c1", &missing, "c-404");
}
