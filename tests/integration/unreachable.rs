//! Unreachable holders: a conversation held by someone who can no longer answer it (deactivated, no reply
//! access any more, or away under RETURN_TO_QUEUE) goes back to the front of the queue in the transaction
//! that made them unreachable, and routing gives it to someone who can, whichever replica made the change.
//! Under KEEP it stays, and the list filter and the preview say so.

use std::collections::HashMap;
use std::time::Duration;

use assignment_service::pb;
use tonic::Code;

use crate::harness::*;

const TEAM: [&str; 4] = ["o1", "o2", "o3", "o4"];

/// Admin, TEAM replying to everything through group "all", o5 replying only to VIP members' conversations;
/// auto-assignment on, away organizers' conversations returned to the queue.
async fn campaign(app: &TestApp) -> String {
    app.admin("admin").await;
    for organizer in TEAM.iter().chain(&["o5"]) {
        app.organizer(organizer).await;
    }
    let all = app.group("admin", "all", &TEAM, true, scope_all()).await;
    app.group("admin", "vip", &["o5"], true, scope_tags(&["vip"]))
        .await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            auto_assign_enabled: Some(true),
            on_unavailable: pb::OnUnavailable::ReturnToQueue.into(),
            ..Default::default()
        },
    )
    .await;
    all.access_group_id
}

async fn holders(app: &TestApp) -> HashMap<String, Option<String>> {
    sqlx::query_as(
        "SELECT conversation_id, assignee_id FROM conversations WHERE campaign_id = $1 AND status = 'OPEN'",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test]
async fn each_way_a_holder_becomes_unreachable_reroutes_their_conversations_across_replicas() {
    let app = TestApp::start().await;
    let all = campaign(&app).await;
    let replicas = [app.replica().await, app.replica().await];
    for n in 0..40 {
        let on = if n % 3 == 0 { &app } else { &replicas[n % 2] };
        on.auto_assign(&format!("c{n:02}")).await;
    }
    app.conversation("vip", &["vip"]).await;
    app.assign_as_admin("vip", "o5").await;
    let before = holders(&app).await;
    let held_by = |who: &str| -> Vec<String> {
        let mut ids: Vec<String> = before
            .iter()
            .filter(|(_, holder)| holder.as_deref() == Some(who))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(held_by("o1").len(), 10, "round-robin over four");

    // At once, on different replicas: o1 deactivated, o2 removed from "all", o3 away, the VIP member's
    // tags changed so o5 may no longer reply.
    let (directory_b, groups_c, assignments_a, directory_a) = (
        replicas[0].directory().await,
        replicas[1].groups().await,
        app.assignments().await,
        app.directory().await,
    );
    let (deactivated, removed, away, retagged) = tokio::join!(
        async move {
            let mut directory = directory_b;
            directory
                .deactivate_user(system(
                    CAMPAIGN,
                    pb::DeactivateUserRequest {
                        user_id: "o1".into(),
                    },
                ))
                .await
        },
        async move {
            let mut groups = groups_c;
            groups
                .remove_organizers(as_actor(
                    "admin",
                    pb::RemoveOrganizersRequest {
                        access_group_id: all,
                        organizer_ids: vec!["o2".into()],
                    },
                ))
                .await
        },
        async move {
            let mut assignments = assignments_a;
            assignments
                .set_availability(system(
                    CAMPAIGN,
                    pb::SetAvailabilityRequest {
                        user_id: "o3".into(),
                        availability: pb::Availability::Away.into(),
                    },
                ))
                .await
        },
        async move {
            let mut directory = directory_a;
            directory
                .upsert_conversation(system(
                    CAMPAIGN,
                    pb::UpsertConversationRequest {
                        conversation_id: "vip".into(),
                        member_id: "m-vip".into(),
                        member_tags: vec![],
                    },
                ))
                .await
        },
    );
    for answer in [deactivated.err(), removed.err(), away.err(), retagged.err()] {
        assert!(answer.is_none(), "{answer:?}");
    }

    // Everything they held ends with o4, the one organizer left who can take it (or waits); nothing is
    // left with nobody and not waiting.
    let mut after = holders(&app).await;
    for _ in 0..100 {
        if after.values().all(|holder| holder.as_deref() == Some("o4")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = holders(&app).await;
    }
    let waiting: Vec<String> = sqlx::query_scalar(
        "SELECT conversation_id FROM waiting_conversations WHERE campaign_id = $1",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    for (id, holder) in &after {
        match holder.as_deref() {
            Some("o4") => {}
            None => assert!(
                waiting.contains(id),
                "{id} is held by nobody and not waiting"
            ),
            other => panic!("{id} is still held by {other:?}"),
        }
    }

    // Each return is in history (and so the feed) with its cause, from the holder who lost it: every
    // conversation each of them held (and any routed to them before they became unreachable).
    let events = app.campaign_history(500).await;
    let returned = |from: &str, cause: &str| -> Vec<String> {
        let mut ids: Vec<String> = events
            .iter()
            .filter(|e| e.action() == pb::AssignmentAction::Unassign && e.cause == cause)
            .filter(|e| e.from_user_id.as_deref() == Some(from))
            .map(|e| e.conversation_id.clone())
            .collect();
        ids.sort();
        ids
    };
    let includes = |all: Vec<String>, some: Vec<String>, what: &str| {
        for id in &some {
            assert!(all.contains(id), "{what}: {id} missing from {all:?}");
        }
    };
    includes(
        returned("o1", "HOLDER_INACTIVE"),
        held_by("o1"),
        "deactivated",
    );
    includes(
        returned("o2", "HOLDER_NO_REPLY_ACCESS"),
        held_by("o2"),
        "removed",
    );
    includes(returned("o3", "RETURNED_TO_QUEUE"), held_by("o3"), "away");
    assert_eq!(
        returned("o5", "HOLDER_NO_REPLY_ACCESS"),
        ["vip"],
        "retagged"
    );
    // And no one else lost anything for these causes (the VIP conversation may have gone from o5 to o2
    // before o2 was removed).
    for event in events
        .iter()
        .filter(|e| e.action() == pb::AssignmentAction::Unassign)
    {
        let from = event.from_user_id.as_deref().unwrap_or_default();
        let expected: &[&str] = match event.cause.as_str() {
            "HOLDER_INACTIVE" => &["o1"],
            "HOLDER_NO_REPLY_ACCESS" if event.conversation_id == "vip" => &["o2", "o5"],
            "HOLDER_NO_REPLY_ACCESS" => &["o2"],
            "RETURNED_TO_QUEUE" => &["o3"],
            _ => continue,
        };
        assert!(expected.contains(&from), "{event:?}");
    }
}

#[tokio::test]
async fn under_keep_the_holder_keeps_it_and_the_list_and_preview_say_so() {
    let app = TestApp::start().await;
    campaign(&app).await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            on_unreachable_holder: pb::OnUnreachableHolder::Keep.into(),
            ..Default::default()
        },
    )
    .await;
    for n in 0..8 {
        app.auto_assign(&format!("c{n}")).await;
    }
    app.deactivate("o1").await;
    let held: Vec<String> = holders(&app)
        .await
        .into_iter()
        .filter(|(_, holder)| holder.as_deref() == Some("o1"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(held.len(), 2, "o1 keeps theirs");
    let mut api = app.assignments().await;
    let listed = api
        .list_conversations(as_actor(
            "admin",
            pb::ListConversationsRequest {
                held_by_unreachable: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .conversations;
    let mut listed: Vec<String> = listed.into_iter().map(|c| c.conversation_id).collect();
    let mut expected = held.clone();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    let preview = api
        .preview_auto_assign(as_actor(
            "admin",
            pb::PreviewAutoAssignRequest {
                conversation_id: held[0].clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.holder_unreachable_cause, "HOLDER_INACTIVE");
    assert!(
        preview.holder_unreachable_message.contains("o1"),
        "{preview:?}"
    );
    // Who may reply to what is an admin's to know.
    let refused = expect_code(
        api.list_conversations(as_actor(
            "o2",
            pb::ListConversationsRequest {
                held_by_unreachable: true,
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&refused), "ADMIN_REQUIRED");

    // The member writes: the answer says the holder cannot reply, and that they keep it.
    let write = |n: u32| pb::AutoAssignConversationRequest {
        trigger_id: format!("again-{n}"),
        ..auto_assign_request(&held[0])
    };
    let kept = api
        .auto_assign_conversation(system(CAMPAIGN, write(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.outcome(), pb::AutoAssignOutcome::AlreadyAssigned);
    assert_eq!(kept.holder_unreachable_cause, "HOLDER_INACTIVE");
    assert!(kept.message.contains("keeps"), "{}", kept.message);
    // Switched to RETURN_TO_QUEUE, the next message applies it: back to the queue, then to someone who can.
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            on_unreachable_holder: pb::OnUnreachableHolder::ReturnToQueue.into(),
            ..Default::default()
        },
    )
    .await;
    let returned = api
        .auto_assign_conversation(system(CAMPAIGN, write(2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(returned.holder_unreachable_cause, "HOLDER_INACTIVE");
    assert!(
        returned.message.contains("went back"),
        "{}",
        returned.message
    );
    assert_ne!(
        returned.conversation.unwrap().assignee_id.as_deref(),
        Some("o1")
    );
    for _ in 0..100 {
        let holder = app.stored(&held[0]).await.0;
        if holder.is_some() {
            assert_ne!(holder.as_deref(), Some("o1"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} was never routed to someone who can reply", held[0]);
}

/// A member writes to a conversation whose organizer is away, offline or off shift: the answer says so
/// (HOLDER_UNAVAILABLE, HOLDER_OFF_SHIFT), and `on_unavailable` decides: KEEP keeps it with them,
/// RETURN_TO_QUEUE sends it to the front of the queue and on to someone who is there.
#[tokio::test]
async fn a_member_writing_to_an_absent_holder_is_told_and_on_unavailable_decides() {
    let app = TestApp::start_configured(&NO_SWEEP).await;
    app.admin("admin").await;
    app.organizer("o1").await;
    app.organizer("o2").await;
    app.group("admin", "all", &["o1", "o2"], true, scope_all())
        .await;
    app.enable_auto_assign().await;
    let mut api = app.assignments().await;
    let write = |conversation: &str, n: u32| pb::AutoAssignConversationRequest {
        trigger_id: format!("{conversation}-again-{n}"),
        ..auto_assign_request(conversation)
    };
    for conversation in ["c1", "c2"] {
        app.conversation(conversation, &[]).await;
        app.assign_as_admin(conversation, "o1").await;
    }
    app.set_availability("o1", pb::Availability::Away).await;

    // KEEP (the default): told, kept.
    let kept = api
        .auto_assign_conversation(system(CAMPAIGN, write("c1", 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.outcome(), pb::AutoAssignOutcome::AlreadyAssigned);
    assert_eq!(kept.holder_unreachable_cause, "HOLDER_UNAVAILABLE");
    assert!(
        kept.message.contains("on_unavailable KEEP"),
        "{}",
        kept.message
    );
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o1"));

    // RETURN_TO_QUEUE: the next message sends it on to o2, who is there.
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            on_unavailable: pb::OnUnavailable::ReturnToQueue.into(),
            ..Default::default()
        },
    )
    .await;
    let returned = api
        .auto_assign_conversation(system(CAMPAIGN, write("c1", 2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(returned.holder_unreachable_cause, "HOLDER_UNAVAILABLE");
    assert!(
        returned.message.contains("went back"),
        "{}",
        returned.message
    );
    let until_with = |conversation: &'static str, holder: &'static str| {
        let app = &app;
        async move {
            for _ in 0..100 {
                if app.stored(conversation).await.0.as_deref() == Some(holder) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{conversation} never went to {holder}");
        }
    };
    until_with("c1", "o2").await;

    // Back, but off shift by a schedule with no window: setting it ends o1's shift, which returns what o1
    // holds (c2) at once. A conversation given to o1 by hand after that goes on when its member writes.
    app.set_availability("o1", pb::Availability::Available)
        .await;
    app.assignments()
        .await
        .set_shift_schedule(as_actor(
            "admin",
            pb::SetShiftScheduleRequest {
                user_id: "o1".into(),
                weekly: vec![],
                exceptions: vec![],
            },
        ))
        .await
        .unwrap();
    until_with("c2", "o2").await;
    app.conversation("c3", &[]).await;
    app.assign_as_admin("c3", "o1").await;
    let preview = api
        .preview_auto_assign(as_actor(
            "admin",
            pb::PreviewAutoAssignRequest {
                conversation_id: "c3".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.holder_unreachable_cause, "HOLDER_OFF_SHIFT");
    let off = api
        .auto_assign_conversation(system(CAMPAIGN, write("c3", 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(off.holder_unreachable_cause, "HOLDER_OFF_SHIFT");
    until_with("c3", "o2").await;

    // History names each cause on the UNASSIGN from o1.
    for (conversation, cause) in [
        ("c1", "HOLDER_UNAVAILABLE"),
        ("c2", "SHIFT_ENDED"),
        ("c3", "HOLDER_OFF_SHIFT"),
    ] {
        let unassigned: Vec<_> = app
            .history(conversation)
            .await
            .into_iter()
            .filter(|e| e.action() == pb::AssignmentAction::Unassign)
            .map(|e| (e.from_user_id, e.cause))
            .collect();
        assert_eq!(
            unassigned,
            [(Some("o1".to_string()), cause.to_string())],
            "{conversation}"
        );
    }
}
