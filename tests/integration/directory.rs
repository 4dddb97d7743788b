//! DirectoryService: the systems of record sync users and conversations.

use assignment_service::pb;
use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn upsert_user_creates_updates_and_reactivates() {
    let app = TestApp::start().await;
    let mut client = app.directory().await;
    let upsert = |role: pb::Role, name: &str| {
        system(
            CAMPAIGN,
            pb::UpsertUserRequest {
                user_id: "u1".into(),
                role: role.into(),
                display_name: name.into(),
            },
        )
    };
    let created = client
        .upsert_user(upsert(pb::Role::Organizer, "Ana"))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    assert_eq!(created.user.unwrap().role(), pb::Role::Organizer);

    app.deactivate("u1").await;
    let updated = client
        .upsert_user(upsert(pb::Role::Admin, "Ana B"))
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.created);
    let user = updated.user.unwrap();
    assert_eq!(user.role(), pb::Role::Admin);
    assert_eq!(user.display_name, "Ana B");
    assert!(user.active, "an upsert reactivates the user");
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn deactivate_user_reports_unknown_users() {
    let app = TestApp::start().await;
    app.organizer("u1").await;
    let mut client = app.directory().await;
    let user = client
        .deactivate_user(system(
            CAMPAIGN,
            pb::DeactivateUserRequest {
                user_id: "u1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!user.active);
    let status = expect_code(
        client
            .deactivate_user(system(
                CAMPAIGN,
                pb::DeactivateUserRequest {
                    user_id: "u2".into(),
                },
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "USER_NOT_FOUND");
    // Users are per campaign.
    expect_code(
        client
            .deactivate_user(system(
                "camp-2",
                pb::DeactivateUserRequest {
                    user_id: "u1".into(),
                },
            ))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn bad_user_input_is_refused_and_nothing_is_written() {
    let app = TestApp::start().await;
    let mut client = app.directory().await;
    let request = |user_id: &str, role: pb::Role, name: String| pb::UpsertUserRequest {
        user_id: user_id.into(),
        role: role.into(),
        display_name: name,
    };
    let cases = [
        (request("", pb::Role::Admin, "A".into()), "user_id"),
        (
            request(&"u".repeat(129), pb::Role::Admin, "A".into()),
            "user_id",
        ),
        (request("u1", pb::Role::Unspecified, "A".into()), "role"),
        (
            request("u1", pb::Role::Admin, "n".repeat(201)),
            "display_name",
        ),
        (
            request("u1", pb::Role::Admin, "line\nbreak".into()),
            "display_name",
        ),
    ];
    for (req, field) in cases {
        let status = expect_code(
            client.upsert_user(system(CAMPAIGN, req)).await,
            Code::InvalidArgument,
        );
        use tonic_types::StatusExt;
        assert_eq!(
            status
                .get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            field
        );
    }
    let mut bad_role = request("u1", pb::Role::Admin, "A".into());
    bad_role.role = 42;
    expect_code(
        client.upsert_user(system(CAMPAIGN, bad_role)).await,
        Code::InvalidArgument,
    );
    let status = expect_code(
        client
            .upsert_user(tonic::Request::new(request(
                "u1",
                pb::Role::Admin,
                "A".into(),
            )))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("x-campaign-id"));
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn upsert_conversation_is_idempotent_and_keeps_assignment_and_status() {
    let app = TestApp::start().await;
    app.admin("admin").await;
    let first = app.conversation("c1", &["b", "a"]).await;
    assert_eq!(first.member_tags, vec!["a", "b"]);
    assert_eq!(first.status(), pb::ConversationStatus::Open);
    let same = app.conversation("c1", &["a", "b"]).await;
    assert_eq!(
        same.version, first.version,
        "an identical upsert writes nothing"
    );

    let mut client = app.assignments().await;
    client
        .assign_conversation(as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "c1".into(),
                assignee_id: "admin".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    let retagged = app.conversation("c1", &["donor"]).await;
    assert_eq!(retagged.member_tags, vec!["donor"]);
    assert_eq!(retagged.assignee_id.as_deref(), Some("admin"));
    assert!(retagged.version > same.version);
    assert_eq!(app.count("conversations").await, 1);
}

#[tokio::test]
async fn bad_conversation_input_is_refused() {
    let app = TestApp::start().await;
    let mut client = app.directory().await;
    let request = |id: &str, member: &str, tags: Vec<String>| {
        system(
            CAMPAIGN,
            pb::UpsertConversationRequest {
                conversation_id: id.into(),
                member_id: member.into(),
                member_tags: tags,
            },
        )
    };
    expect_code(
        client.upsert_conversation(request("", "m", vec![])).await,
        Code::InvalidArgument,
    );
    expect_code(
        client.upsert_conversation(request("c1", "", vec![])).await,
        Code::InvalidArgument,
    );
    expect_code(
        client
            .upsert_conversation(request("c1", "m", vec!["".into()]))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        client
            .upsert_conversation(request("c1", "m", vec!["t".repeat(65)]))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        client
            .upsert_conversation(request(
                "c1",
                "m",
                (0..101).map(|i| format!("t{i}")).collect(),
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(app.count("conversations").await, 0);
}
