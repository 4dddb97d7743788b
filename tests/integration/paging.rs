//! Page tokens: they page to the end, and are refused (INVALID_ARGUMENT on `page_token`) in another
//! campaign, with another filter, by another list, or when forged.

use assignment_service::domain::paging::PageScope;
use assignment_service::pb;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::*;

const OTHER: &str = "camp-2";

/// Admin "admin" and organizer "org1" in both campaigns; conversations c1..c5 and groups "Alpha", "Beta"
/// and "Gamma" (org1 in all) in the default one, c1..c3 in the other.
async fn campaigns() -> TestApp {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.organizer("org1").await;
    let mut directory = app.directory().await;
    for (user_id, role) in [("admin", pb::Role::Admin), ("org1", pb::Role::Organizer)] {
        directory
            .upsert_user(system(
                OTHER,
                pb::UpsertUserRequest {
                    user_id: user_id.into(),
                    role: role.into(),
                    display_name: user_id.into(),
                },
            ))
            .await
            .unwrap();
    }
    for i in 1..=5 {
        app.conversation(&format!("c{i}"), &[]).await;
    }
    for i in 1..=3 {
        app.conversation_in(OTHER, &format!("c{i}"), &[]).await;
    }
    for name in ["Alpha", "Beta", "Gamma"] {
        app.group("admin", name, &["org1"], true, scope_all()).await;
    }
    app
}

fn conversations(page_token: &str) -> pb::ListConversationsRequest {
    pb::ListConversationsRequest {
        page_size: 2,
        page_token: page_token.into(),
        ..Default::default()
    }
}

async fn list(
    app: &TestApp,
    campaign: &str,
    request: pb::ListConversationsRequest,
) -> Result<pb::ListConversationsResponse, Status> {
    app.assignments()
        .await
        .list_conversations(as_actor_in(campaign, "admin", request))
        .await
        .map(|reply| reply.into_inner())
}

/// INVALID_ARGUMENT with a violation on `page_token` and a message that says what to do.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, Status>) -> String {
    let status = expect_code(result, Code::InvalidArgument);
    let details = status.get_error_details();
    let violation = &details
        .bad_request()
        .expect("a field violation")
        .field_violations[0];
    assert_eq!(violation.field, "page_token");
    assert!(status.message().contains("next_page_token"), "{status:?}");
    status.message().to_owned()
}

#[tokio::test]
async fn tokens_page_to_the_end_and_only_where_they_were_issued() {
    let app = campaigns().await;

    // Three pages of 2, 2 and 1.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(&app, CAMPAIGN, conversations(&token)).await.unwrap();
        seen.extend(page.conversations.iter().map(|c| c.conversation_id.clone()));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, vec!["c1", "c2", "c3", "c4", "c5"]);

    let first = list(&app, CAMPAIGN, conversations("")).await.unwrap();
    let token = first.next_page_token;
    assert!(!token.is_empty());

    // The other campaign has c1..c3 too, and its admin may list them: the token is still not theirs.
    let message = refused(list(&app, OTHER, conversations(&token)).await);
    assert!(message.contains("another campaign"), "{message}");

    // The same list with another filter.
    for other_filter in [
        pb::ListConversationsRequest {
            unassigned: true,
            ..conversations(&token)
        },
        pb::ListConversationsRequest {
            status: pb::ConversationStatus::Open.into(),
            ..conversations(&token)
        },
        pb::ListConversationsRequest {
            assignee_id: "org1".into(),
            ..conversations(&token)
        },
    ] {
        let message = refused(list(&app, CAMPAIGN, other_filter).await);
        assert!(message.contains("another filter"), "{message}");
    }

    // Another list.
    let message = refused(
        app.assignments()
            .await
            .list_assignment_history(as_actor(
                "admin",
                pb::ListAssignmentHistoryRequest {
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await,
    );
    assert!(message.contains("ListConversations"), "{message}");
    refused(
        app.groups()
            .await
            .list_access_groups(as_actor(
                "admin",
                pb::ListAccessGroupsRequest {
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await,
    );

    // And unchanged, it still works.
    let second = list(&app, CAMPAIGN, conversations(&token)).await.unwrap();
    assert_eq!(second.conversations[0].conversation_id, "c3");
}

#[tokio::test]
async fn access_group_tokens_are_bound_to_the_organizer_as_resolved() {
    let app = campaigns().await;
    let mut groups = app.groups().await;
    let request = |actor: &str, organizer_id: &str, page_token: &str| {
        as_actor(
            actor,
            pb::ListAccessGroupsRequest {
                organizer_id: organizer_id.into(),
                page_size: 2,
                page_token: page_token.into(),
            },
        )
    };
    let names = |reply: &pb::ListAccessGroupsResponse| -> Vec<String> {
        reply.access_groups.iter().map(|g| g.name.clone()).collect()
    };

    // An organizer's own list is the same with or without their id, and so is its token.
    let first = groups
        .list_access_groups(request("org1", "", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&first), vec!["Alpha", "Beta"]);
    let second = groups
        .list_access_groups(request("org1", "org1", &first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&second), vec!["Gamma"]);
    // An admin's view of org1's groups used for every group is another filter.
    let message = refused(
        groups
            .list_access_groups(request("admin", "", &first.next_page_token))
            .await,
    );
    assert!(message.contains("another filter"), "{message}");
}

#[tokio::test]
async fn forged_tokens_are_invalid_argument_not_internal() {
    let app = campaigns().await;
    let history = |page_token: String| pb::ListAssignmentHistoryRequest {
        conversation_id: "c1".into(),
        page_size: 2,
        page_token,
    };

    // A token built the way the server builds them, around keys no list holds: a NUL byte reaches
    // PostgreSQL as an error if it gets that far.
    let forged = PageScope::conversations(CAMPAIGN, None, false, None, false).token("c\0");
    refused(list(&app, CAMPAIGN, conversations(&forged)).await);
    let forged = PageScope::access_groups(CAMPAIGN, None).token("a\0");
    refused(
        app.groups()
            .await
            .list_access_groups(as_actor(
                "admin",
                pb::ListAccessGroupsRequest {
                    page_token: forged,
                    ..Default::default()
                },
            ))
            .await,
    );
    let forged = PageScope::history(CAMPAIGN, Some("c1")).token("-1");
    let mut assignments = app.assignments().await;
    refused(
        assignments
            .list_assignment_history(as_actor("admin", history(forged)))
            .await,
    );

    // The old form of token, with a NUL, and plain garbage.
    for forged in [
        URL_SAFE_NO_PAD.encode("conversations:c\0"),
        "garbage".to_string(),
    ] {
        refused(list(&app, CAMPAIGN, conversations(&forged)).await);
    }

    // A history token cut short: three events make two pages of 2.
    let assign = |assignee_id: &str| pb::AssignConversationRequest {
        conversation_id: "c1".into(),
        assignee_id: assignee_id.into(),
        expected_version: None,
    };
    assignments
        .assign_conversation(as_actor("admin", assign("org1")))
        .await
        .unwrap();
    assignments
        .unassign_conversation(as_actor(
            "admin",
            pb::UnassignConversationRequest {
                return_to_queue: false,
                conversation_id: "c1".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    assignments
        .assign_conversation(as_actor("admin", assign("admin")))
        .await
        .unwrap();
    let first = assignments
        .list_assignment_history(as_actor("admin", history(String::new())))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());
    let cut = token[..token.len() - 3].to_string();
    refused(
        assignments
            .list_assignment_history(as_actor("admin", history(cut)))
            .await,
    );
}
