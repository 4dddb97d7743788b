//! AccessGroupService: groups grant organizers view/reply; only admins change them.

use assignment_service::pb;
use tonic::Code;

use crate::harness::*;

async fn campaign() -> TestApp {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.organizer("org1").await;
    app.organizer("org2").await;
    app.conversation("c-vol", &["volunteer"]).await;
    app.conversation("c-don", &["donor"]).await;
    app.conversation("c-none", &[]).await;
    app
}

async fn access(app: &TestApp, user: &str, conversation: &str) -> pb::CheckAccessResponse {
    app.groups()
        .await
        .check_access(as_actor(
            "admin",
            pb::CheckAccessRequest {
                conversation_id: conversation.into(),
                user_id: user.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn scopes_grant_by_tag_by_listing_and_to_all() {
    let app = campaign().await;
    let tagged = app
        .group(
            "admin",
            "Volunteers",
            &["org1"],
            true,
            scope_tags(&["volunteer"]),
        )
        .await;
    assert_eq!(tagged.organizer_ids, vec!["org1"]);
    app.group(
        "admin",
        "Listed",
        &["org2"],
        false,
        scope_conversations(&["c-don"]),
    )
    .await;

    let vol = access(&app, "org1", "c-vol").await;
    assert!(vol.can_view && vol.can_reply && !vol.is_admin);
    assert_eq!(vol.grants.len(), 1);
    assert_eq!(vol.grants[0].name, "Volunteers");
    assert_eq!(vol.grants[0].access_group_id, tagged.access_group_id);
    let none = access(&app, "org1", "c-don").await;
    assert!(!none.can_view && !none.can_reply && none.grants.is_empty());
    let listed = access(&app, "org2", "c-don").await;
    assert!(listed.can_view && !listed.can_reply);
    assert!(!access(&app, "org2", "c-vol").await.can_view);

    app.group("admin", "Everyone", &["org2"], true, scope_all())
        .await;
    let everything = access(&app, "org2", "c-none").await;
    assert!(everything.can_view && everything.can_reply);
    let both = access(&app, "org2", "c-don").await;
    assert_eq!(both.grants.len(), 2);
    assert!(both.can_reply);

    let admin = access(&app, "admin", "c-none").await;
    assert!(admin.is_admin && admin.can_view && admin.can_reply);
}

#[tokio::test]
async fn only_admins_change_groups() {
    let app = campaign().await;
    let group = app
        .group("admin", "Team", &["org1"], true, scope_all())
        .await;
    let mut client = app.groups().await;
    let create = pb::CreateAccessGroupRequest {
        name: "Mine".into(),
        permissions: Some(pb::AccessGroupPermissions {
            view: true,
            reply: true,
        }),
        scope: Some(scope_all()),
        organizer_ids: vec!["org1".into()],
    };
    let status = expect_code(
        client.create_access_group(as_actor("org1", create)).await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "ADMIN_REQUIRED");
    let id = group.access_group_id.clone();
    expect_code(
        client
            .add_organizers(as_actor(
                "org1",
                pb::AddOrganizersRequest {
                    access_group_id: id.clone(),
                    organizer_ids: vec!["org2".into()],
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        client
            .remove_organizers(as_actor(
                "org1",
                pb::RemoveOrganizersRequest {
                    access_group_id: id.clone(),
                    organizer_ids: vec!["org1".into()],
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        client
            .update_access_group(as_actor(
                "org1",
                pb::UpdateAccessGroupRequest {
                    access_group_id: id.clone(),
                    name: Some("Renamed".into()),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        client
            .delete_access_group(as_actor(
                "org1",
                pb::DeleteAccessGroupRequest {
                    access_group_id: id,
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(app.count("access_groups").await, 1);
    assert_eq!(app.count("access_group_organizers").await, 1);
}

#[tokio::test]
async fn invalid_groups_are_refused_and_nothing_is_written() {
    let app = campaign().await;
    app.group("admin", "Field Team", &[], true, scope_all())
        .await;
    let mut client = app.groups().await;
    let base = || pb::CreateAccessGroupRequest {
        name: "New".into(),
        permissions: Some(pb::AccessGroupPermissions {
            view: true,
            reply: true,
        }),
        scope: Some(scope_all()),
        organizer_ids: vec!["org1".into()],
    };
    let mut duplicate = base();
    duplicate.name = "field team".into();
    let status = expect_code(
        client
            .create_access_group(as_actor("admin", duplicate))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&status), "ACCESS_GROUP_NAME_TAKEN");

    let mut reply_only = base();
    reply_only.permissions = Some(pb::AccessGroupPermissions {
        view: false,
        reply: true,
    });
    let mut empty_scope = base();
    empty_scope.scope = Some(pb::AccessGroupScope::default());
    let mut no_name = base();
    no_name.name = "  ".into();
    let mut long_name = base();
    long_name.name = "n".repeat(101);
    let mut admin_member = base();
    admin_member.organizer_ids = vec!["admin".into()];
    for request in [reply_only, empty_scope, no_name, long_name, admin_member] {
        expect_code(
            client.create_access_group(as_actor("admin", request)).await,
            Code::InvalidArgument,
        );
    }
    let mut ghost = base();
    ghost.organizer_ids = vec!["org1".into(), "ghost".into()];
    let status = expect_code(
        client.create_access_group(as_actor("admin", ghost)).await,
        Code::NotFound,
    );
    assert!(status.message().contains("ghost"));
    let mut unknown_conversation = base();
    unknown_conversation.scope = Some(scope_conversations(&["c-vol", "c-missing"]));
    let status = expect_code(
        client
            .create_access_group(as_actor("admin", unknown_conversation))
            .await,
        Code::NotFound,
    );
    assert!(status.message().contains("c-missing"));
    app.deactivate("org2").await;
    let mut inactive = base();
    inactive.organizer_ids = vec!["org2".into()];
    expect_code(
        client
            .create_access_group(as_actor("admin", inactive))
            .await,
        Code::FailedPrecondition,
    );

    assert_eq!(app.count("access_groups").await, 1);
    assert_eq!(app.count("access_group_organizers").await, 0);
    assert_eq!(app.count("access_group_conversations").await, 0);
}

#[tokio::test]
async fn update_membership_and_delete_change_access_but_not_assignments_kept() {
    let app = campaign().await;
    // Holders who lose reply access keep what they hold (the default returns it: unreachable.rs).
    let keep = pb::UpdateInboxSettingsRequest {
        on_unreachable_holder: pb::OnUnreachableHolder::Keep.into(),
        ..Default::default()
    };
    app.update_settings("admin", keep).await;
    let group = app
        .group(
            "admin",
            "Team",
            &["org1"],
            false,
            scope_tags(&["volunteer"]),
        )
        .await;
    let id = group.access_group_id.clone();
    let mut client = app.groups().await;

    let updated = client
        .update_access_group(as_actor(
            "admin",
            pb::UpdateAccessGroupRequest {
                access_group_id: id.clone(),
                name: Some("Donor team".into()),
                permissions: Some(pb::AccessGroupPermissions {
                    view: true,
                    reply: true,
                }),
                scope: Some(scope_conversations(&["c-don"])),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .access_group
        .unwrap();
    assert_eq!(updated.name, "Donor team");
    assert_eq!(updated.scope.unwrap().conversation_ids, vec!["c-don"]);
    assert!(access(&app, "org1", "c-don").await.can_reply);
    assert!(
        !access(&app, "org1", "c-vol").await.can_view,
        "the new scope replaced the old"
    );

    let added = client
        .add_organizers(as_actor(
            "admin",
            pb::AddOrganizersRequest {
                access_group_id: id.clone(),
                organizer_ids: vec!["org2".into(), "org1".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .access_group
        .unwrap();
    assert_eq!(added.organizer_ids, vec!["org1", "org2"]);

    app.assignments()
        .await
        .assign_conversation(as_actor(
            "org1",
            pb::AssignConversationRequest {
                conversation_id: "c-don".into(),
                assignee_id: "org1".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    let removed = client
        .remove_organizers(as_actor(
            "admin",
            pb::RemoveOrganizersRequest {
                access_group_id: id.clone(),
                organizer_ids: vec!["org1".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .access_group
        .unwrap();
    assert_eq!(removed.organizer_ids, vec!["org2"]);
    assert!(!access(&app, "org1", "c-don").await.can_reply);

    client
        .delete_access_group(as_actor(
            "admin",
            pb::DeleteAccessGroupRequest {
                access_group_id: id.clone(),
            },
        ))
        .await
        .unwrap();
    assert!(!access(&app, "org2", "c-don").await.can_view);
    assert_eq!(
        app.stored("c-don").await.0.as_deref(),
        Some("org1"),
        "assignments stay"
    );
    let status = expect_code(
        client
            .get_access_group(as_actor(
                "admin",
                pb::GetAccessGroupRequest {
                    access_group_id: id,
                },
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "ACCESS_GROUP_NOT_FOUND");
}

#[tokio::test]
async fn group_ids_are_validated() {
    let app = campaign().await;
    let mut client = app.groups().await;
    for bad in ["", "not-a-uuid"] {
        expect_code(
            client
                .get_access_group(as_actor(
                    "admin",
                    pb::GetAccessGroupRequest {
                        access_group_id: bad.into(),
                    },
                ))
                .await,
            Code::InvalidArgument,
        );
    }
    expect_code(
        client
            .delete_access_group(as_actor(
                "admin",
                pb::DeleteAccessGroupRequest {
                    access_group_id: uuid::Uuid::new_v4().to_string(),
                },
            ))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn organizers_see_only_their_own_groups() {
    let app = campaign().await;
    let mine = app
        .group("admin", "Mine", &["org1"], true, scope_all())
        .await;
    let theirs = app
        .group("admin", "Theirs", &["org2"], true, scope_all())
        .await;
    let mut client = app.groups().await;

    let listed = client
        .list_access_groups(as_actor("org1", pb::ListAccessGroupsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed
        .access_groups
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(names, vec!["Mine"]);
    client
        .get_access_group(as_actor(
            "org1",
            pb::GetAccessGroupRequest {
                access_group_id: mine.access_group_id,
            },
        ))
        .await
        .unwrap();
    let status = expect_code(
        client
            .get_access_group(as_actor(
                "org1",
                pb::GetAccessGroupRequest {
                    access_group_id: theirs.access_group_id,
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "NOT_A_MEMBER");
    expect_code(
        client
            .check_access(as_actor(
                "org1",
                pb::CheckAccessRequest {
                    conversation_id: "c-vol".into(),
                    user_id: "org2".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );

    // Admins page through every group by name.
    app.group("admin", "Alpha", &[], true, scope_all()).await;
    let first = client
        .list_access_groups(as_actor(
            "admin",
            pb::ListAccessGroupsRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_access_groups(as_actor(
            "admin",
            pb::ListAccessGroupsRequest {
                page_size: 2,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let all: Vec<_> = first
        .access_groups
        .iter()
        .chain(&second.access_groups)
        .map(|g| g.name.clone())
        .collect();
    assert_eq!(all, vec!["Alpha", "Mine", "Theirs"]);
    assert!(second.next_page_token.is_empty());
}

/// "May view" is one rule: an organizer sees what a group covers and what is assigned to them, and
/// CheckAccess, GetConversation and CheckReplyPermission agree on it.
#[tokio::test]
async fn an_organizer_holding_a_conversation_may_view_it_without_a_group() {
    let app = campaign().await;
    app.assignments()
        .await
        .assign_conversation(as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "c-none".into(),
                assignee_id: "org1".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();

    let held = access(&app, "org1", "c-none").await;
    assert!(held.can_view, "the holder may view it");
    assert!(!held.can_reply, "no group grants reply permission");
    assert!(held.grants.is_empty());
    let got = app
        .assignments()
        .await
        .get_conversation(as_actor(
            "org1",
            pb::GetConversationRequest {
                conversation_id: "c-none".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.conversation.unwrap().assignee_id.as_deref(),
        Some("org1")
    );
    let reply = app
        .assignments()
        .await
        .check_reply_permission(as_actor(
            "org1",
            pb::CheckReplyPermissionRequest {
                conversation_id: "c-none".into(),
                user_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.allowed);
    assert_eq!(reply.reason(), pb::ReplyPermissionReason::NoReplyAccess);

    // Someone else's conversation, uncovered: neither view nor reply, and Get is refused.
    let other = access(&app, "org2", "c-none").await;
    assert!(!other.can_view && !other.can_reply);
    let status = expect_code(
        app.assignments()
            .await
            .get_conversation(as_actor(
                "org2",
                pb::GetConversationRequest {
                    conversation_id: "c-none".into(),
                },
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "CONVERSATION_NOT_FOUND");
    // And an organizer asking CheckAccess about themselves on it learns nothing either.
    let hidden = expect_code(
        app.groups()
            .await
            .check_access(as_actor(
                "org2",
                pb::CheckAccessRequest {
                    conversation_id: "c-none".into(),
                    user_id: String::new(),
                },
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(reason(&hidden), "CONVERSATION_NOT_FOUND");
}

/// Names that look the same are the same name: a no-break space, full-width letters or doubled spaces are
/// refused as taken, on create, rename and bulk's new group, and names are kept in their normal form. The
/// database holds the rule too, for any writer.
#[tokio::test]
async fn look_alike_group_names_are_refused_as_taken() {
    let app = campaign().await;
    let team = app.group("admin", "Team A", &[], false, scope_all()).await;
    let mut client = app.groups().await;
    let create = |name: &str| pb::CreateAccessGroupRequest {
        name: name.into(),
        permissions: Some(pb::AccessGroupPermissions {
            view: true,
            reply: false,
        }),
        scope: Some(scope_all()),
        organizer_ids: vec![],
    };
    for look_alike in ["Team\u{00A0}A", "Ｔｅａｍ Ａ", "team  a", "Team\u{3000}A "] {
        let status = expect_code(
            client
                .create_access_group(as_actor("admin", create(look_alike)))
                .await,
            Code::AlreadyExists,
        );
        assert_eq!(reason(&status), "ACCESS_GROUP_NAME_TAKEN", "{look_alike:?}");
    }
    // Renaming another group to a look-alike is refused the same way.
    let other = app.group("admin", "Team B", &[], false, scope_all()).await;
    let status = expect_code(
        client
            .update_access_group(as_actor(
                "admin",
                pb::UpdateAccessGroupRequest {
                    access_group_id: other.access_group_id.clone(),
                    name: Some("Team\u{00A0}A".into()),
                    ..Default::default()
                },
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&status), "ACCESS_GROUP_NAME_TAKEN");
    // So is a bulk assignment's new group.
    let bulk = pb::BulkAssignRequest {
        payload: Some(pb::bulk_assign_request::Payload::Options(
            pb::BulkAssignOptions {
                assignee_ids: vec!["org1".into()],
                grant_access: true,
                new_access_group_name: "Ｔｅａｍ\u{00A0}A".into(),
                ..Default::default()
            },
        )),
    };
    let status = expect_code(
        app.assignments()
            .await
            .bulk_assign(as_actor("admin", tokio_stream::iter([bulk])))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&status), "ACCESS_GROUP_NAME_TAKEN");
    assert_eq!(app.count("access_groups").await, 2);

    // A new name is stored in its normal form.
    let created = client
        .create_access_group(as_actor("admin", create("Ｆｉｅｌｄ\u{00A0}\u{00A0}team ")))
        .await
        .unwrap()
        .into_inner()
        .access_group
        .unwrap();
    assert_eq!(created.name, "Field team");
    assert_eq!(team.name, "Team A");

    // The database refuses a look-alike written by anyone.
    let inserted = sqlx::query(
        "INSERT INTO access_groups (campaign_id, access_group_id, name, can_view, can_reply) \
         VALUES ($1, gen_random_uuid(), $2, true, false)",
    )
    .bind(CAMPAIGN)
    .bind("team\u{00A0}a")
    .execute(app.store.pool())
    .await;
    let err = inserted.expect_err("the unique index refuses a look-alike");
    assert!(
        matches!(&err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505")),
        "{err:?}"
    );
}

/// Tags are kept in normal form on both sides, so a scope's full-width tag grants what it looks like.
#[tokio::test]
async fn look_alike_tags_are_the_same_tag() {
    let app = campaign().await;
    app.conversation("c-nbsp", &["field\u{00A0}team"]).await;
    app.group(
        "admin",
        "Volunteers",
        &["org1"],
        false,
        scope_tags(&["ｖｏｌｕｎｔｅｅｒ"]),
    )
    .await;
    app.group(
        "admin",
        "Field",
        &["org2"],
        false,
        scope_tags(&["field team"]),
    )
    .await;
    assert!(access(&app, "org1", "c-vol").await.can_view);
    assert!(!access(&app, "org1", "c-don").await.can_view);
    assert!(access(&app, "org2", "c-nbsp").await.can_view);
    let tags: Vec<String> = sqlx::query_scalar(
        "SELECT member_tags FROM conversations WHERE campaign_id = $1 AND conversation_id = 'c-nbsp'",
    )
    .bind(CAMPAIGN)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(tags, vec!["field team"]);
}

/// The database's normal form (`normal_text`, behind the unique index) is the service's.
#[tokio::test]
async fn the_database_and_the_service_agree_on_the_normal_form() {
    let app = TestApp::start().await;
    for value in [
        "Team\u{00A0}A",
        "Ｔｅａｍ Ａ",
        " a \u{2028}\u{3000} b\t",
        "ﬁeld ① Ⅻ",
        "Cafe\u{301}",
        "x\u{1680}y\u{205F}z\u{0085}w",
    ] {
        let database: String = sqlx::query_scalar("SELECT normal_text($1)")
            .bind(value)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        assert_eq!(
            database,
            assignment_service::domain::validate::normal_form(value),
            "{value:?}"
        );
    }
}
