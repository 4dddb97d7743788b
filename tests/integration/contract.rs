//! The error contract's details: every invalid field listed, facts in ErrorInfo metadata, repeats in a
//! bulk stream answered once.

use assignment_service::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::*;

fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn metadata(status: &tonic::Status, key: &str) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get(key).cloned())
}

#[tokio::test]
async fn bad_request_lists_every_invalid_field() {
    let app = TestApp::start().await;
    app.admin("admin").await;
    let status = expect_code(
        app.directory()
            .await
            .upsert_conversation(system(
                CAMPAIGN,
                pb::UpsertConversationRequest {
                    conversation_id: String::new(),
                    member_id: "has space".into(),
                    member_tags: vec![String::new()],
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        fields(&status),
        vec!["conversation_id", "member_id", "member_tags[0]"]
    );
    let status = expect_code(
        app.assignments()
            .await
            .list_conversations(as_actor(
                "admin",
                pb::ListConversationsRequest {
                    assignee_id: "x y".into(),
                    status: 99,
                    page_size: -1,
                    ..Default::default()
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(fields(&status), vec!["assignee_id", "status", "page_size"]);
    assert_eq!(app.count("conversations").await, 0);
}

#[tokio::test]
async fn refusals_carry_the_facts_they_name() {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.organizer("org1").await;
    app.conversation("c1", &[]).await;
    let mut client = app.assignments().await;
    let assign = |to: &str, version: Option<i64>| {
        as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "c1".into(),
                assignee_id: to.into(),
                expected_version: version,
            },
        )
    };
    client
        .assign_conversation(assign("org1", None))
        .await
        .unwrap();
    let status = expect_code(
        client.assign_conversation(assign("admin", None)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(metadata(&status, "assignee_id").as_deref(), Some("org1"));
    let status = expect_code(
        client.assign_conversation(assign("admin", Some(1))).await,
        Code::Aborted,
    );
    assert_eq!(metadata(&status, "current_version").as_deref(), Some("2"));
    assert_eq!(metadata(&status, "expected_version").as_deref(), Some("1"));
    let status = expect_code(
        client.assign_conversation(assign("ghost", None)).await,
        Code::NotFound,
    );
    assert_eq!(metadata(&status, "assignee_id").as_deref(), Some("ghost"));
}

#[tokio::test]
async fn a_conversation_repeated_in_later_batches_of_a_stream_is_changed_once() {
    let app = TestApp::start().await;
    app.admin("admin").await;
    for org in ["o1", "o2"] {
        app.organizer(org).await;
    }
    app.group("admin", "All", &["o1", "o2"], true, scope_all())
        .await;
    for id in ["c1", "c2"] {
        app.conversation(id, &[]).await;
        app.assignments()
            .await
            .assign_conversation(as_actor(
                "admin",
                pb::AssignConversationRequest {
                    conversation_id: id.into(),
                    assignee_id: "admin".into(),
                    expected_version: None,
                },
            ))
            .await
            .unwrap();
    }
    let events = app.count("assignment_events").await;
    use pb::bulk_reassign_request::Payload;
    let batch = |ids: &[&str]| pb::BulkReassignRequest {
        payload: Some(Payload::Conversations(pb::ConversationBatch {
            conversation_ids: ids.iter().map(|s| s.to_string()).collect(),
        })),
    };
    let messages = vec![
        pb::BulkReassignRequest {
            payload: Some(Payload::Options(pb::BulkAssignOptions {
                assignee_ids: vec!["o1".into(), "o2".into()],
                ..Default::default()
            })),
        },
        batch(&["c1"]),
        batch(&["c1", "c2"]),
    ];
    let mut stream = app
        .assignments()
        .await
        .bulk_reassign(as_actor("admin", tokio_stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    let mut items = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(pb::bulk_reassign_response::Payload::Results(results)) = message.payload {
            items.extend(results.items);
        }
    }
    use pb::BulkItemOutcome as O;
    let outcomes: Vec<(String, O, String)> = items
        .iter()
        .map(|i| (i.conversation_id.clone(), i.outcome(), i.reason.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("c1".into(), O::Reassigned, String::new()),
            ("c1".into(), O::Unchanged, "DUPLICATE_IN_STREAM".into()),
            ("c2".into(), O::Reassigned, String::new()),
        ]
    );
    // The repeat took no turn: c2 went to the next target.
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o1"));
    assert_eq!(app.stored("c2").await.0.as_deref(), Some("o2"));
    assert_eq!(app.count("assignment_events").await, events + 2);
}
