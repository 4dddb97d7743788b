//! Streaming bulk assign, unassign and reassign, and the bulk user picker.

use std::collections::HashMap;

use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::*;

/// Admin, organizers o1..o3 who may reply to everything, organizer "lone" without any group, and
/// conversations c000..c{n-1}.
async fn campaign(conversations: usize) -> TestApp {
    let app = TestApp::start().await;
    app.admin("admin").await;
    for org in ["o1", "o2", "o3", "lone"] {
        app.organizer(org).await;
    }
    app.group("admin", "Team", &["o1", "o2", "o3"], true, scope_all())
        .await;
    for i in 0..conversations {
        app.conversation(&conv(i), &[]).await;
    }
    app
}

/// `count` conversations `{prefix}-0000`, `{prefix}-0001`, ... straight into the table: many, fast (the
/// directory sync is not what these tests exercise).
async fn seed_conversations(app: &TestApp, prefix: &str, count: i64) {
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id) \
         SELECT $1, $2 || '-' || lpad(n::text, 4, '0'), 'm' || n FROM generate_series(0, $3 - 1) AS n",
    )
    .bind(CAMPAIGN)
    .bind(prefix)
    .bind(count)
    .execute(app.store.pool())
    .await
    .unwrap();
}

fn conv(i: usize) -> String {
    format!("c{i:03}")
}

fn options(assignees: &[&str]) -> pb::BulkAssignOptions {
    pb::BulkAssignOptions {
        assignee_ids: assignees.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn batch(ids: &[String]) -> pb::ConversationBatch {
    pb::ConversationBatch {
        conversation_ids: ids.to_vec(),
    }
}

fn assign_stream(
    options: pb::BulkAssignOptions,
    batches: Vec<Vec<String>>,
) -> Vec<pb::BulkAssignRequest> {
    use pb::bulk_assign_request::Payload;
    std::iter::once(Payload::Options(options))
        .chain(batches.iter().map(|ids| Payload::Conversations(batch(ids))))
        .map(|payload| pb::BulkAssignRequest {
            payload: Some(payload),
        })
        .collect()
}

/// Every result and the summary of a finished stream.
async fn collect<T>(
    mut stream: tonic::Streaming<T>,
    payload: impl Fn(T) -> Option<Outcome>,
) -> Result<(Vec<pb::BulkItemResult>, pb::BulkSummary), tonic::Status> {
    let mut items = Vec::new();
    let mut summary = None;
    while let Some(message) = stream.next().await {
        match payload(message?) {
            Some(Outcome::Results(results)) => items.extend(results.items),
            Some(Outcome::Summary(s)) => summary = Some(s),
            None => panic!("empty response message"),
        }
    }
    Ok((items, summary.expect("a stream ends with its summary")))
}

enum Outcome {
    Results(pb::BulkResults),
    Summary(pb::BulkSummary),
}

async fn bulk_assign(
    client: &mut AssignmentServiceClient<Channel>,
    actor: &str,
    messages: Vec<pb::BulkAssignRequest>,
) -> Result<(Vec<pb::BulkItemResult>, pb::BulkSummary), tonic::Status> {
    use pb::bulk_assign_response::Payload;
    let stream = client
        .bulk_assign(as_actor(actor, tokio_stream::iter(messages)))
        .await?
        .into_inner();
    collect(stream, |m: pb::BulkAssignResponse| {
        m.payload.map(|p| match p {
            Payload::Results(r) => Outcome::Results(r),
            Payload::Summary(s) => Outcome::Summary(s),
        })
    })
    .await
}

async fn bulk_reassign(
    client: &mut AssignmentServiceClient<Channel>,
    actor: &str,
    options: pb::BulkAssignOptions,
    ids: Vec<String>,
) -> Result<(Vec<pb::BulkItemResult>, pb::BulkSummary), tonic::Status> {
    use pb::bulk_reassign_request::Payload as In;
    use pb::bulk_reassign_response::Payload;
    let messages = vec![
        pb::BulkReassignRequest {
            payload: Some(In::Options(options)),
        },
        pb::BulkReassignRequest {
            payload: Some(In::Conversations(batch(&ids))),
        },
    ];
    let stream = client
        .bulk_reassign(as_actor(actor, tokio_stream::iter(messages)))
        .await?
        .into_inner();
    collect(stream, |m: pb::BulkReassignResponse| {
        m.payload.map(|p| match p {
            Payload::Results(r) => Outcome::Results(r),
            Payload::Summary(s) => Outcome::Summary(s),
        })
    })
    .await
}

async fn bulk_unassign(
    client: &mut AssignmentServiceClient<Channel>,
    actor: &str,
    ids: Vec<String>,
) -> Result<(Vec<pb::BulkItemResult>, pb::BulkSummary), tonic::Status> {
    use pb::bulk_unassign_response::Payload;
    let messages = vec![pb::BulkUnassignRequest {
        conversations: Some(batch(&ids)),
    }];
    let stream = client
        .bulk_unassign(as_actor(actor, tokio_stream::iter(messages)))
        .await?
        .into_inner();
    collect(stream, |m: pb::BulkUnassignResponse| {
        m.payload.map(|p| match p {
            Payload::Results(r) => Outcome::Results(r),
            Payload::Summary(s) => Outcome::Summary(s),
        })
    })
    .await
}

async fn bulk_events(app: &TestApp) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT conversation_id, action, to_user_id FROM assignment_events WHERE source = 'BULK' ORDER BY event_id")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn many_conversations_spread_round_robin_evenly_in_the_order_sent() {
    let app = campaign(100).await;
    let ids: Vec<String> = (0..100).map(conv).collect();
    let batches: Vec<Vec<String>> = ids.chunks(30).map(<[String]>::to_vec).collect();
    let mut client = app.assignments().await;
    let (items, summary) = bulk_assign(
        &mut client,
        "admin",
        assign_stream(options(&["o1", "o2", "o3"]), batches),
    )
    .await
    .unwrap();

    assert_eq!(items.len(), 100);
    let expected = ["o1", "o2", "o3"];
    for (i, item) in items.iter().enumerate() {
        assert_eq!(
            item.conversation_id, ids[i],
            "results come in the order sent"
        );
        assert_eq!(item.outcome(), pb::BulkItemOutcome::Assigned);
        assert_eq!(item.assignee_id.as_deref(), Some(expected[i % 3]));
    }
    assert_eq!(summary.received, 100);
    assert_eq!(summary.assigned, 100);
    let counts: Vec<i64> = expected.iter().map(|o| summary.per_assignee[*o]).collect();
    assert_eq!(counts, vec![34, 33, 33]);
    let events = bulk_events(&app).await;
    assert_eq!(events.len(), 100);
    assert!(events.iter().all(|(_, action, _)| action == "ASSIGN"));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(app.stored(id).await.0.as_deref(), Some(expected[i % 3]));
    }
}

#[tokio::test]
async fn refusals_and_unknown_conversations_never_stop_the_others() {
    let app = campaign(4).await;
    app.assign_as_admin("c001", "o2").await;
    let ids = vec![conv(0), conv(1), "missing".into(), "bad id".into(), conv(2)];
    let (items, summary) = bulk_assign(
        &mut app.assignments().await,
        "admin",
        assign_stream(options(&["o1", "o3"]), vec![ids]),
    )
    .await
    .unwrap();
    use pb::BulkItemOutcome as O;
    let outcomes: Vec<O> = items.iter().map(|i| i.outcome()).collect();
    assert_eq!(
        outcomes,
        vec![
            O::Assigned,
            O::Refused,
            O::NotFound,
            O::Refused,
            O::Assigned
        ]
    );
    assert_eq!(items[1].reason, "ALREADY_ASSIGNED");
    assert!(items[1].message.contains("BulkReassign"));
    assert_eq!(items[3].reason, "INVALID_CONVERSATION_ID");
    assert_eq!(items[4].assignee_id.as_deref(), Some("o3"));
    assert_eq!(
        (summary.assigned, summary.refused, summary.not_found),
        (2, 2, 1)
    );
    assert_eq!(app.stored("c001").await.0.as_deref(), Some("o2"));
}

#[tokio::test]
async fn organizers_bulk_assign_only_to_themselves() {
    let app = campaign(3).await;
    app.conversation("hidden", &[]).await;
    app.group(
        "admin",
        "Lone's",
        &["lone"],
        true,
        scope_conversations(&["c000", "c001", "c002"]),
    )
    .await;
    app.assign_as_admin("c001", "o2").await;
    let mut client = app.assignments().await;

    for targets in [vec!["lone", "o2"], vec!["admin"], vec!["o2"]] {
        let status = expect_code(
            bulk_assign(
                &mut client,
                "lone",
                assign_stream(options(&targets), vec![vec![conv(0)]]),
            )
            .await,
            Code::PermissionDenied,
        );
        assert_eq!(reason(&status), "ORGANIZER_ASSIGNS_SELF_ONLY");
    }
    let mut grant = options(&["lone"]);
    grant.grant_access = true;
    grant.new_access_group_name = "Mine".into();
    expect_code(
        bulk_assign(
            &mut client,
            "lone",
            assign_stream(grant, vec![vec![conv(0)]]),
        )
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        app.count("assignment_events").await,
        1,
        "refused calls wrote nothing"
    );

    let ids = vec![conv(0), conv(1), "hidden".to_string(), conv(2)];
    let (items, _) = bulk_assign(
        &mut client,
        "lone",
        assign_stream(options(&["lone"]), vec![ids]),
    )
    .await
    .unwrap();
    use pb::BulkItemOutcome as O;
    let outcomes: Vec<O> = items.iter().map(|i| i.outcome()).collect();
    assert_eq!(
        outcomes,
        vec![O::Assigned, O::Refused, O::NotFound, O::Assigned]
    );
    assert_eq!(items[1].reason, "ALREADY_ASSIGNED");
    // A conversation the organizer may not view is answered exactly as one that does not exist.
    assert_eq!(items[2].reason, "CONVERSATION_NOT_FOUND");
    assert_eq!(
        items[2].message,
        pb_missing_message("hidden"),
        "the same words as for a missing conversation"
    );
    assert_eq!(app.stored("c001").await.0.as_deref(), Some("o2"));
    assert_eq!(app.stored("hidden").await.0, None);
}

#[tokio::test]
async fn without_grant_access_turns_of_organizers_lacking_permission_are_refused() {
    let app = campaign(4).await;
    let ids: Vec<String> = (0..4).map(conv).collect();
    let (items, summary) = bulk_assign(
        &mut app.assignments().await,
        "admin",
        assign_stream(options(&["o1", "lone"]), vec![ids]),
    )
    .await
    .unwrap();
    use pb::BulkItemOutcome as O;
    let outcomes: Vec<O> = items.iter().map(|i| i.outcome()).collect();
    assert_eq!(
        outcomes,
        vec![O::Assigned, O::Refused, O::Assigned, O::Refused]
    );
    assert_eq!(items[1].reason, "NO_ACCESS");
    assert!(items[1].message.contains("grant_access"));
    assert_eq!(summary.created_access_group_id, None);
    assert_eq!(app.count("access_groups").await, 1);
}

#[tokio::test]
async fn grant_access_creates_one_group_for_exactly_the_new_permissions() {
    let app = campaign(6).await;
    let ids: Vec<String> = (0..6).map(conv).collect();
    let mut grant = options(&["o1", "lone"]);
    grant.grant_access = true;
    grant.new_access_group_name = "Lone's conversations".into();
    // Two batches: the group is created by the first and extended by the second.
    let batches = vec![ids[..3].to_vec(), ids[3..].to_vec()];
    let (items, summary) = bulk_assign(
        &mut app.assignments().await,
        "admin",
        assign_stream(grant, batches),
    )
    .await
    .unwrap();
    assert!(
        items
            .iter()
            .all(|i| i.outcome() == pb::BulkItemOutcome::Assigned)
    );
    let granted: Vec<&str> = items
        .iter()
        .filter(|i| i.access_granted)
        .map(|i| i.conversation_id.as_str())
        .collect();
    assert_eq!(granted, vec!["c001", "c003", "c005"]);
    assert!(
        items
            .iter()
            .filter(|i| i.access_granted)
            .all(|i| i.assignee_id.as_deref() == Some("lone"))
    );

    let group_id = summary
        .created_access_group_id
        .expect("a group was created");
    let group = app
        .groups()
        .await
        .get_access_group(as_actor(
            "admin",
            pb::GetAccessGroupRequest {
                access_group_id: group_id,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .access_group
        .unwrap();
    assert_eq!(group.name, "Lone's conversations");
    assert_eq!(group.organizer_ids, vec!["lone"]);
    assert_eq!(
        group.scope.unwrap().conversation_ids,
        vec!["c001", "c003", "c005"]
    );
    let permissions = group.permissions.unwrap();
    assert!(permissions.view && permissions.reply);
    let reply = app
        .assignments()
        .await
        .check_reply_permission(as_actor(
            "lone",
            pb::CheckReplyPermissionRequest {
                conversation_id: "c003".into(),
                user_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.allowed, "the new group lets lone reply: {reply:?}");
}

#[tokio::test]
async fn bad_options_fail_the_whole_call_up_front() {
    let app = campaign(2).await;
    app.organizer("gone").await;
    app.deactivate("gone").await;
    let mut client = app.assignments().await;
    let one = || vec![vec![conv(0)]];
    expect_code(
        bulk_assign(&mut client, "admin", assign_stream(options(&[]), one())).await,
        Code::InvalidArgument,
    );
    // The same code and reason as AssignConversation for an unknown or inactive assignee.
    let status = expect_code(
        bulk_assign(
            &mut client,
            "admin",
            assign_stream(options(&["ghost"]), one()),
        )
        .await,
        Code::NotFound,
    );
    assert_eq!(reason(&status), "ASSIGNEE_NOT_FOUND");
    let status = expect_code(
        bulk_assign(
            &mut client,
            "admin",
            assign_stream(options(&["gone"]), one()),
        )
        .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status), "ASSIGNEE_INACTIVE");
    // A target named twice would get two turns: refused.
    let status = expect_code(
        bulk_assign(
            &mut client,
            "admin",
            assign_stream(options(&["o1", "o1", "o2"]), one()),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("more than once"), "{status:?}");
    let mut unknown_group = options(&[]);
    unknown_group.access_group_ids = vec![uuid::Uuid::new_v4().to_string()];
    expect_code(
        bulk_assign(&mut client, "admin", assign_stream(unknown_group, one())).await,
        Code::InvalidArgument,
    );
    let mut unnamed = options(&["o1"]);
    unnamed.grant_access = true;
    expect_code(
        bulk_assign(&mut client, "admin", assign_stream(unnamed, one())).await,
        Code::InvalidArgument,
    );
    let mut taken = options(&["o1"]);
    taken.grant_access = true;
    taken.new_access_group_name = "team".into();
    expect_code(
        bulk_assign(&mut client, "admin", assign_stream(taken, one())).await,
        Code::AlreadyExists,
    );
    // Conversations before options.
    let mut no_options = assign_stream(options(&["o1"]), one());
    no_options.remove(0);
    expect_code(
        bulk_assign(&mut client, "admin", no_options).await,
        Code::InvalidArgument,
    );
    expect_code(
        bulk_assign(
            &mut client,
            "nobody",
            assign_stream(options(&["o1"]), one()),
        )
        .await,
        Code::Unauthenticated,
    );
    assert_eq!(app.count("assignment_events").await, 0);
    assert_eq!(app.count("access_groups").await, 1);
}

#[tokio::test]
async fn groups_as_targets_spread_over_their_active_organizers() {
    let app = campaign(4).await;
    app.deactivate("o3").await;
    let team: String = sqlx::query_scalar("SELECT access_group_id::text FROM access_groups")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let mut by_group = options(&[]);
    by_group.access_group_ids = vec![team];
    let ids: Vec<String> = (0..4).map(conv).collect();
    let (_, summary) = bulk_assign(
        &mut app.assignments().await,
        "admin",
        assign_stream(by_group, vec![ids]),
    )
    .await
    .unwrap();
    assert_eq!(
        summary.per_assignee,
        HashMap::from([("o1".to_string(), 2), ("o2".to_string(), 2)])
    );
}

#[tokio::test]
async fn a_message_over_the_size_limit_ends_the_stream_with_invalid_argument() {
    let app = campaign(1).await;
    let huge: Vec<String> = (0..5_001).map(|i| format!("x{i}")).collect();
    let result = bulk_assign(
        &mut app.assignments().await,
        "admin",
        assign_stream(options(&["o1"]), vec![vec![conv(0)], huge]),
    )
    .await;
    expect_code(result, Code::InvalidArgument);
    // The first batch was committed before the bad message arrived.
    assert_eq!(app.stored("c000").await.0.as_deref(), Some("o1"));
}

#[tokio::test]
async fn bulk_unassign_admins_everything_organizers_their_own() {
    let app = campaign(4).await;
    for (i, who) in ["o1", "o2", "o1"].iter().enumerate() {
        app.assign_as_admin(&conv(i), who).await;
    }
    let mut client = app.assignments().await;
    let ids: Vec<String> = (0..4).map(conv).collect();
    let (items, summary) = bulk_unassign(&mut client, "o1", ids.clone()).await.unwrap();
    use pb::BulkItemOutcome as O;
    let outcomes: Vec<O> = items.iter().map(|i| i.outcome()).collect();
    assert_eq!(
        outcomes,
        vec![O::Unassigned, O::Refused, O::Unassigned, O::Unchanged]
    );
    assert_eq!(items[1].reason, "ORGANIZER_UNASSIGNS_OWN_ONLY");
    assert_eq!(summary.unassigned, 2);
    assert_eq!(app.stored("c001").await.0.as_deref(), Some("o2"));

    let (items, _) = bulk_unassign(&mut client, "admin", ids).await.unwrap();
    assert_eq!(items[1].outcome(), O::Unassigned);
    assert_eq!(app.stored("c001").await.0, None);
    let unassigns = bulk_events(&app)
        .await
        .into_iter()
        .filter(|(_, a, _)| a == "UNASSIGN")
        .count();
    assert_eq!(unassigns, 3);
}

#[tokio::test]
async fn bulk_reassign_is_for_admins_and_moves_assigned_conversations() {
    let app = campaign(3).await;
    app.assign_as_admin("c000", "o1").await;
    app.assign_as_admin("c001", "o1").await;
    let mut client = app.assignments().await;
    let ids: Vec<String> = (0..3).map(conv).collect();
    let status = expect_code(
        bulk_reassign(&mut client, "o1", options(&["o1"]), ids.clone()).await,
        Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "ORGANIZERS_CANNOT_REASSIGN");

    let (items, summary) = bulk_reassign(&mut client, "admin", options(&["o2", "o3"]), ids)
        .await
        .unwrap();
    use pb::BulkItemOutcome as O;
    let outcomes: Vec<O> = items.iter().map(|i| i.outcome()).collect();
    assert_eq!(outcomes, vec![O::Reassigned, O::Reassigned, O::Refused]);
    assert_eq!(items[2].reason, "NOT_ASSIGNED");
    assert_eq!(
        summary.per_assignee,
        HashMap::from([("o2".to_string(), 1), ("o3".to_string(), 1)])
    );
    let events = bulk_events(&app).await;
    assert_eq!(
        events,
        vec![
            (
                "c000".to_string(),
                "REASSIGN".to_string(),
                Some("o2".to_string())
            ),
            (
                "c001".to_string(),
                "REASSIGN".to_string(),
                Some("o3".to_string())
            ),
        ]
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_leaves_each_conversation_done_or_untouched() {
    let app = campaign(40).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = app.assignments().await;
    let ids: Vec<String> = (0..40).map(conv).collect();
    for message in assign_stream(options(&["o1", "o2"]), vec![ids[..20].to_vec()]) {
        tx.send(message).await.unwrap();
    }
    let mut responses = client
        .bulk_assign(as_actor(
            "admin",
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    let first = responses.next().await.unwrap().unwrap();
    let Some(pb::bulk_assign_response::Payload::Results(results)) = first.payload else {
        panic!("results first");
    };
    // Queue another batch, then vanish without reading on or closing the stream properly.
    tx.send(assign_stream(options(&[]), vec![ids[20..].to_vec()]).remove(1))
        .await
        .unwrap();
    drop(responses);
    drop(tx);
    drop(client);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // What was streamed is true.
    for item in &results.items {
        assert_eq!(app.stored(&item.conversation_id).await.0, item.assignee_id);
    }
    // Every conversation is assigned with its event, or untouched without one.
    for id in &ids {
        let assignee = app.stored(id).await.0;
        let events: i64 =
            sqlx::query_scalar("SELECT count(*) FROM assignment_events WHERE conversation_id = $1")
                .bind(id)
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        assert_eq!(
            events,
            i64::from(assignee.is_some()),
            "{id}: {assignee:?} with {events} events"
        );
    }
}

#[tokio::test]
async fn the_user_picker_shows_groups_covering_the_whole_selection() {
    let app = campaign(0).await;
    app.conversation("vol-1", &["volunteer"]).await;
    app.conversation("vol-2", &["volunteer", "donor"]).await;
    app.group(
        "admin",
        "Volunteers",
        &["lone"],
        true,
        scope_tags(&["volunteer"]),
    )
    .await;
    app.group("admin", "Donors", &["o1"], true, scope_tags(&["donor"]))
        .await;
    app.group("admin", "Viewers", &["o2"], false, scope_all())
        .await;
    let mut groups = app.groups().await;
    let list = |all: bool| pb::ListEligibleAssigneesRequest {
        conversation_ids: vec!["vol-1".into(), "vol-2".into()],
        all_access_groups: all,
    };
    let eligible = groups
        .list_eligible_assignees(as_actor("admin", list(false)))
        .await
        .unwrap()
        .into_inner()
        .access_groups;
    let names: Vec<&str> = eligible.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, vec!["Team", "Volunteers"]);
    assert_eq!(eligible[1].organizer_ids, vec!["lone"]);

    let all = groups
        .list_eligible_assignees(as_actor("admin", list(true)))
        .await
        .unwrap()
        .into_inner()
        .access_groups;
    let flags: Vec<(&str, bool)> = all
        .iter()
        .map(|g| (g.name.as_str(), g.covers_selection))
        .collect();
    assert_eq!(
        flags,
        vec![
            ("Donors", false),
            ("Team", true),
            ("Viewers", false),
            ("Volunteers", true)
        ]
    );

    expect_code(
        groups
            .list_eligible_assignees(as_actor("o1", list(false)))
            .await,
        Code::PermissionDenied,
    );
    let mut unknown = list(false);
    unknown.conversation_ids.push("nope".into());
    expect_code(
        groups
            .list_eligible_assignees(as_actor("admin", unknown))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn each_batch_sees_the_directory_as_it_is_now() {
    let app = campaign(8).await;
    // Deactivated holders keep what they hold here: this is about what each batch sees.
    let keep = pb::UpdateInboxSettingsRequest {
        on_unreachable_holder: pb::OnUnreachableHolder::Keep.into(),
        ..Default::default()
    };
    app.update_settings("admin", keep).await;
    let ids: Vec<String> = (0..8).map(conv).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut messages = assign_stream(
        options(&["o1", "o2"]),
        vec![ids[..4].to_vec(), ids[4..].to_vec()],
    );
    let second = messages.pop().unwrap();
    for message in messages {
        tx.send(message).await.unwrap();
    }
    let mut client = app.assignments().await;
    let mut responses = client
        .bulk_assign(as_actor(
            "admin",
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::bulk_assign_response::Payload::Results(first)) =
        responses.next().await.unwrap().unwrap().payload
    else {
        panic!("results first");
    };
    assert!(
        first
            .items
            .iter()
            .all(|i| i.outcome() == pb::BulkItemOutcome::Assigned)
    );

    // o2 leaves mid-stream: their turns in the next batch are refused.
    app.deactivate("o2").await;
    tx.send(second).await.unwrap();
    let Some(pb::bulk_assign_response::Payload::Results(later)) =
        responses.next().await.unwrap().unwrap().payload
    else {
        panic!("results");
    };
    let reasons: Vec<&str> = later.items.iter().map(|i| i.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec!["", "ASSIGNEE_INACTIVE", "", "ASSIGNEE_INACTIVE"]
    );

    // The admin is deactivated: the stream ends, refusing what it has not done.
    app.deactivate("admin").await;
    tx.send(assign_stream(options(&[]), vec![vec![conv(1)]]).remove(1))
        .await
        .unwrap();
    let status = responses
        .next()
        .await
        .unwrap()
        .expect_err("the actor is gone");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        app.stored("c001").await.0.as_deref(),
        Some("o2"),
        "assigned before o2 left"
    );
    assert_eq!(app.stored("c005").await.0, None);
}

/// What a bulk item says of a conversation that does not exist.
fn pb_missing_message(conversation_id: &str) -> String {
    assignment_service::error::AppError::conversation_not_found(conversation_id).to_string()
}

/// Open conversations per assignee as routing reads them (folded counts plus pending changes), and as
/// counted from the conversations themselves.
async fn routing_loads(app: &TestApp) -> (HashMap<String, i64>, HashMap<String, i64>) {
    let kept: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, sum(open)::bigint FROM ( \
           SELECT user_id, open FROM organizer_loads UNION ALL \
           SELECT user_id, delta FROM organizer_load_changes) AS l GROUP BY user_id HAVING sum(open) <> 0",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let counted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT assignee_id, count(*) FROM conversations \
         WHERE status = 'OPEN' AND assignee_id IS NOT NULL GROUP BY assignee_id",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    (kept.into_iter().collect(), counted.into_iter().collect())
}

#[tokio::test]
async fn the_open_counts_capacity_reads_follow_every_kind_of_change() {
    let app = campaign(40).await;
    let mut client = app.assignments().await;
    let ids: Vec<String> = (0..30).map(conv).collect();
    bulk_assign(
        &mut client,
        "admin",
        assign_stream(options(&["o1", "o2", "o3"]), vec![ids]),
    )
    .await
    .unwrap();
    app.assign_as_admin(&conv(30), "o1").await;
    client
        .reassign_conversation(as_actor(
            "admin",
            pb::ReassignConversationRequest {
                conversation_id: conv(0),
                assignee_id: "o2".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    client
        .unassign_conversation(as_actor(
            "admin",
            pb::UnassignConversationRequest {
                return_to_queue: false,
                conversation_id: conv(1),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    for id in [2, 3] {
        client
            .resolve_conversation(as_actor(
                "admin",
                pb::ResolveConversationRequest {
                    conversation_id: conv(id),
                },
            ))
            .await
            .unwrap();
    }
    client
        .reopen_conversation(as_actor(
            "admin",
            pb::ReopenConversationRequest {
                conversation_id: conv(2),
            },
        ))
        .await
        .unwrap();
    bulk_reassign(
        &mut client,
        "admin",
        options(&["o3"]),
        (10..15).map(conv).collect(),
    )
    .await
    .unwrap();
    bulk_unassign(&mut client, "admin", (20..25).map(conv).collect())
        .await
        .unwrap();

    let (kept, counted) = routing_loads(&app).await;
    assert_eq!(
        counted.values().sum::<i64>(),
        31 - 1 - 1 - 5,
        "the changes above"
    );
    assert_eq!(kept, counted, "pending changes");

    // Returned to the queue (o3 deactivated: its conversations go back, unassigned), then routed: the
    // queue drains to o1 and o2 and new conversations are assigned.
    app.deactivate("o3").await;
    let (kept, counted) = routing_loads(&app).await;
    assert_eq!(counted.get("o3"), None, "o3 holds nothing now");
    assert_eq!(kept, counted, "returned to the queue");
    app.enable_auto_assign().await;
    for id in 35..40 {
        app.auto_assign(&conv(id)).await;
    }
    let (kept, counted) = routing_loads(&app).await;
    assert_eq!(
        counted.values().sum::<i64>(),
        31 - 1 - 1 - 5 + 5 - app.count("waiting_conversations").await,
        "o3's drained from the queue to o1 and o2, and five more assigned"
    );
    assert_eq!(kept, counted, "auto-assigned");
    let folded = assignment_service::service::auto_assign::fold_loads(&app.store)
        .await
        .unwrap();
    assert!(folded > 0);
    assert_eq!(app.count("organizer_load_changes").await, 0);
    let (kept, counted) = routing_loads(&app).await;
    assert_eq!(kept, counted, "folded");
}

#[tokio::test]
async fn each_target_gets_exactly_what_its_groups_scopes_cover() {
    let app = campaign(0).await;
    app.conversation("vip-1", &["vip"]).await;
    app.conversation("listed-1", &[]).await;
    app.conversation("plain-1", &[]).await;
    for org in ["tagged", "listed", "viewer"] {
        app.organizer(org).await;
    }
    app.group("admin", "VIPs", &["tagged"], true, scope_tags(&["vip"]))
        .await;
    app.group(
        "admin",
        "One conversation",
        &["listed"],
        true,
        scope_conversations(&["listed-1"]),
    )
    .await;
    app.group("admin", "Readers", &["viewer"], false, scope_all())
        .await;
    let all = vec!["vip-1".to_string(), "listed-1".into(), "plain-1".into()];
    use pb::BulkItemOutcome as O;
    let assign_to = |target: &'static str, ids: Vec<String>| {
        let app = &app;
        async move {
            let (items, _) = bulk_assign(
                &mut app.assignments().await,
                "admin",
                assign_stream(options(&[target]), vec![ids]),
            )
            .await
            .unwrap();
            items
                .iter()
                .map(|i| (i.conversation_id.clone(), i.outcome()))
                .collect::<Vec<_>>()
        }
    };

    // View without reply covers nothing to assign.
    let outcomes = assign_to("viewer", all.clone()).await;
    assert!(
        outcomes.iter().all(|(_, o)| *o == O::Refused),
        "{outcomes:?}"
    );
    assert_eq!(
        assign_to("listed", all.clone()).await,
        vec![
            ("vip-1".into(), O::Refused),
            ("listed-1".into(), O::Assigned),
            ("plain-1".into(), O::Refused)
        ]
    );
    assert_eq!(
        assign_to("tagged", vec!["vip-1".into(), "plain-1".into()]).await,
        vec![
            ("vip-1".into(), O::Assigned),
            ("plain-1".into(), O::Refused)
        ]
    );
    assert_eq!(app.stored("vip-1").await.0.as_deref(), Some("tagged"));
    assert_eq!(app.stored("listed-1").await.0.as_deref(), Some("listed"));
    assert_eq!(app.stored("plain-1").await.0, None);
}

#[tokio::test]
async fn a_bulk_assignment_takes_conversations_out_of_the_waiting_queue() {
    let app = campaign(0).await;
    app.enable_auto_assign().await;
    for org in ["o1", "o2", "o3"] {
        app.set_availability(org, pb::Availability::Away).await;
    }
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = format!("w{i}");
        let reply = app.auto_assign(&id).await;
        assert_eq!(reply.outcome(), pb::AutoAssignOutcome::Queued);
        ids.push(id);
    }
    assert_eq!(app.count("waiting_conversations").await, 3);

    let (items, _) = bulk_assign(
        &mut app.assignments().await,
        "admin",
        assign_stream(options(&["o1"]), vec![ids[..2].to_vec()]),
    )
    .await
    .unwrap();
    assert!(
        items
            .iter()
            .all(|i| i.outcome() == pb::BulkItemOutcome::Assigned)
    );
    assert_eq!(
        app.count("waiting_conversations").await,
        1,
        "w2 still waits"
    );
    assert_eq!(
        app.count(
            "assignment_events WHERE action = 'LEFT_QUEUE' AND source = 'BULK' \
             AND conversation_id IN ('w0', 'w1')"
        )
        .await,
        2,
        "each conversation taken from the queue has its LEFT_QUEUE event"
    );
}

#[tokio::test]
async fn the_chunks_of_one_large_message_are_written_in_order_while_the_next_is_prepared() {
    let app = campaign(1100).await;
    // Three chunks (500, 500, 103): a repeat across chunks, a malformed id in the second, and a target
    // whose grants the first chunk's new group records and the later chunks extend.
    let mut ids: Vec<String> = (0..1100).map(conv).collect();
    ids.insert(700, conv(5));
    ids.insert(800, "bad id".into());
    ids.push(conv(1099));
    ids.push(conv(0));
    let mut grant = options(&["o1", "lone"]);
    grant.grant_access = true;
    grant.new_access_group_name = "Lone's share".into();
    let (items, summary) = bulk_assign(
        &mut app.assignments().await,
        "admin",
        assign_stream(grant, vec![ids.clone()]),
    )
    .await
    .unwrap();

    assert_eq!(items.len(), ids.len(), "one result per id sent");
    use pb::BulkItemOutcome as O;
    let mut turn = 0;
    for (item, id) in items.iter().zip(&ids) {
        assert_eq!(&item.conversation_id, id, "results come in the order sent");
        match id.as_str() {
            "bad id" => assert_eq!(item.outcome(), O::Refused),
            _ if item.outcome() == O::Unchanged => {}
            _ => {
                assert_eq!(item.outcome(), O::Assigned, "{id}");
                let expected = ["o1", "lone"][turn % 2];
                assert_eq!(item.assignee_id.as_deref(), Some(expected), "{id}");
                assert_eq!(item.access_granted, expected == "lone", "{id}");
                assert_eq!(app.stored(id).await.0.as_deref(), Some(expected));
                turn += 1;
            }
        }
    }
    let duplicates: Vec<usize> = (0..ids.len())
        .filter(|&i| items[i].outcome() == O::Unchanged)
        .collect();
    assert_eq!(
        duplicates,
        vec![700, 1102, 1103],
        "repeats are answered once"
    );
    assert_eq!((summary.assigned, turn), (1100, 1100));
    assert_eq!(summary.per_assignee["o1"], 550);
    assert_eq!(summary.per_assignee["lone"], 550);
    assert_eq!(
        app.count("assignment_events WHERE source = 'BULK'").await,
        1100,
        "one event per assignment, none for repeats"
    );
    assert_eq!(app.count("access_groups").await, 2, "one group was created");
    assert_eq!(
        app.count("access_group_conversations").await,
        550,
        "it covers every conversation granted to lone, from every chunk"
    );
    assert!(summary.created_access_group_id.is_some());
}

#[tokio::test]
async fn a_reader_that_falls_behind_holds_no_row_lock() {
    let app = campaign(0).await;
    seed_conversations(&app, "slow", 5000).await;
    let ids: Vec<String> = (0..5000).map(|n| format!("slow-{n:04}")).collect();
    // A client whose receive window holds about one message of results.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let mut responses = AssignmentServiceClient::new(channel)
        .bulk_assign(as_actor(
            "admin",
            tokio_stream::iter(assign_stream(options(&["o1", "o2"]), vec![ids])),
        ))
        .await
        .unwrap()
        .into_inner();

    // Nobody reads: the stream stops once the window and the server's short queue are full.
    let assigned = || async {
        app.count("conversations WHERE assignee_id IS NOT NULL")
            .await
    };
    // Stalled: no progress for 1.2 s (a busy machine may take a few hundred ms over one chunk).
    let mut stalled_at = assigned().await;
    let mut quiet_checks = 0;
    while quiet_checks < 4 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = assigned().await;
        quiet_checks = if now == stalled_at {
            quiet_checks + 1
        } else {
            0
        };
        stalled_at = now;
    }
    assert!(stalled_at < 5000, "the stream waits for its reader");
    let locked =
        sqlx::query("SELECT 1 FROM conversations WHERE campaign_id = $1 FOR UPDATE NOWAIT")
            .bind(CAMPAIGN)
            .fetch_all(app.store.pool())
            .await;
    assert!(
        locked.is_ok(),
        "a stream waiting on its reader holds no conversation locked: {locked:?}"
    );

    let mut answered = 0;
    while let Some(message) = responses.next().await {
        if let Some(pb::bulk_assign_response::Payload::Results(results)) = message.unwrap().payload
        {
            answered += results.items.len();
        }
    }
    assert_eq!(answered, 5000);
    assert_eq!(assigned().await, 5000);
}

#[tokio::test]
async fn overlapping_streams_on_two_replicas_assign_each_conversation_once() {
    let app = campaign(0).await;
    seed_conversations(&app, "x", 2400).await;
    let id = |n: usize| format!("x-{n:04}");
    let replicas = [app.replica().await, app.replica().await];
    // Two streams of pipelined chunks over a shared middle (600..1800), in opposite orders, each in
    // messages of 700 ids (a chunk boundary inside each message).
    let first: Vec<String> = (0..1800).map(id).collect();
    let second: Vec<String> = (600..2400).rev().map(id).collect();
    let streams = [
        (&replicas[0], options(&["o1", "o2"]), first),
        (&replicas[1], options(&["o3"]), second),
    ]
    .map(|(replica, options, ids)| {
        let messages = ids.chunks(700).map(<[String]>::to_vec).collect();
        let request = assign_stream(options, messages);
        async move {
            bulk_assign(&mut replica.assignments().await, "admin", request)
                .await
                .unwrap()
        }
    });
    let [(first_items, first_summary), (second_items, second_summary)] =
        futures_util::future::join_all(streams)
            .await
            .try_into()
            .unwrap();

    assert_eq!(first_items.len() + second_items.len(), 3600);
    assert_eq!(
        first_summary.assigned + second_summary.assigned,
        2400,
        "every conversation assigned by exactly one stream"
    );
    let stored: HashMap<String, String> = sqlx::query_as(
        "SELECT conversation_id, assignee_id FROM conversations WHERE campaign_id = $1",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut told = HashMap::new();
    for item in first_items.iter().chain(&second_items) {
        match item.outcome() {
            pb::BulkItemOutcome::Assigned => {
                let to = item.assignee_id.clone().unwrap();
                assert_eq!(
                    stored[&item.conversation_id], to,
                    "what was said is what was done"
                );
                assert!(
                    told.insert(item.conversation_id.clone(), to).is_none(),
                    "{} assigned twice",
                    item.conversation_id
                );
            }
            outcome => {
                assert_eq!(outcome, pb::BulkItemOutcome::Refused);
                assert_eq!(item.reason, "ALREADY_ASSIGNED");
            }
        }
    }
    assert_eq!(told.len(), 2400);
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT conversation_id, to_user_id FROM assignment_events \
         WHERE campaign_id = $1 AND source = 'BULK' AND action = 'ASSIGN'",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(events.len(), 2400, "one event per assignment");
    for (conversation, to) in events {
        assert_eq!(stored[&conversation], to, "history matches state");
    }
    // The first stream's turns alternate over o1 and o2, whatever the other took.
    let first_turns: Vec<&str> = first_items
        .iter()
        .filter_map(|i| i.assignee_id.as_deref())
        .collect();
    for (turn, assignee) in first_turns.iter().enumerate() {
        assert_eq!(*assignee, ["o1", "o2"][turn % 2]);
    }
}
