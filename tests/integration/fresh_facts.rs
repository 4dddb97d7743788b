//! Decisions on fresh, locked facts: a change waiting for a row lock decides on the directory as it is
//! when it gets the lock, not as it was when the call arrived.

use assignment_service::pb;
use tonic::Code;

use crate::harness::*;

/// Admin "admin", organizers org1 and org2 who may reply to everything, c1 assigned to org1.
async fn campaign() -> TestApp {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.organizer("org1").await;
    app.organizer("org2").await;
    app.group("admin", "Everyone", &["org1", "org2"], true, scope_all())
        .await;
    app.conversation("c1", &[]).await;
    app.assignments()
        .await
        .assign_conversation(as_actor(
            "admin",
            pb::AssignConversationRequest {
                conversation_id: "c1".into(),
                assignee_id: "org1".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    app
}

const LOCK_C1: &str =
    "SELECT 1 FROM conversations WHERE campaign_id = $1 AND conversation_id = 'c1' FOR UPDATE";

/// Starts admin's ReassignConversation of c1 on its own task.
async fn reassign_c1_to(
    app: &TestApp,
    to: &str,
) -> tokio::task::JoinHandle<Result<pb::Conversation, tonic::Status>> {
    let mut client = app.assignments().await;
    let request = as_actor(
        "admin",
        pb::ReassignConversationRequest {
            conversation_id: "c1".into(),
            assignee_id: to.into(),
            expected_version: None,
        },
    );
    tokio::spawn(async move {
        client
            .reassign_conversation(request)
            .await
            .map(|r| r.into_inner().conversation.unwrap())
    })
}

#[tokio::test]
async fn an_admin_demoted_while_their_reassign_waits_for_the_row_is_refused() {
    let app = campaign().await;
    let events = app.count("assignment_events").await;
    let (held, pid) = app.hold_locks(LOCK_C1).await;
    let waiting = reassign_c1_to(&app, "org2").await;
    app.until_blocked_by(pid).await;
    app.organizer("admin").await;
    held.rollback().await.unwrap();
    // Now an organizer in no group, they may not even see c1 (it is org1's): not found, nothing changed.
    let status = expect_code(waiting.await.unwrap(), Code::NotFound);
    assert_eq!(reason(&status), "CONVERSATION_NOT_FOUND");
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("org1"));
    assert_eq!(app.count("assignment_events").await, events);
}

#[tokio::test]
async fn an_admin_deactivated_while_their_reassign_waits_for_the_row_is_refused() {
    let app = campaign().await;
    let (held, pid) = app.hold_locks(LOCK_C1).await;
    let waiting = reassign_c1_to(&app, "org2").await;
    app.until_blocked_by(pid).await;
    app.deactivate("admin").await;
    held.rollback().await.unwrap();
    let status = expect_code(waiting.await.unwrap(), Code::PermissionDenied);
    assert_eq!(reason(&status), "ACTOR_INACTIVE");
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("org1"));
}

#[tokio::test]
async fn a_target_deactivated_while_the_reassign_waits_is_refused() {
    let app = campaign().await;
    let (held, pid) = app.hold_locks(LOCK_C1).await;
    let waiting = reassign_c1_to(&app, "org2").await;
    app.until_blocked_by(pid).await;
    app.deactivate("org2").await;
    held.rollback().await.unwrap();
    let status = expect_code(waiting.await.unwrap(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "ASSIGNEE_INACTIVE");
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("org1"));
}

#[tokio::test]
async fn an_organizer_deactivated_while_a_trigger_waits_for_the_campaign_lock_is_skipped() {
    let app = campaign().await;
    app.enable_auto_assign().await;
    let (held, pid) = app
        .hold_locks("SELECT 1 FROM inbox_settings WHERE campaign_id = $1 FOR UPDATE")
        .await;
    let mut client = app.assignments().await;
    let waiting = tokio::spawn({
        async move {
            client
                .auto_assign_conversation(system(
                    CAMPAIGN,
                    pb::AutoAssignConversationRequest {
                        priority: Default::default(),
                        conversation_id: "c2".into(),
                        trigger_id: "t1".into(),
                        member_id: "m2".into(),
                        member_tags: vec![],
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    });
    app.until_blocked_by(pid).await;
    // org1 would be first in the round-robin: deactivated now (by a commit the batch's snapshot may have
    // missed: DeactivateUser itself waits for the campaign's lock), the waiting trigger must skip them.
    sqlx::query("UPDATE users SET active = false WHERE campaign_id = $1 AND user_id = 'org1'")
        .bind(CAMPAIGN)
        .execute(app.store.pool())
        .await
        .unwrap();
    held.rollback().await.unwrap();
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.assignee_id.as_deref(), Some("org2"));
    assert_eq!(app.stored("c2").await.0.as_deref(), Some("org2"));
}

#[tokio::test]
async fn an_admin_demoted_while_their_bulk_batch_waits_ends_the_stream() {
    let app = campaign().await;
    let (held, pid) = app.hold_locks(LOCK_C1).await;
    let mut client = app.assignments().await;
    use pb::bulk_reassign_request::Payload;
    let messages = vec![
        pb::BulkReassignRequest {
            payload: Some(Payload::Options(pb::BulkAssignOptions {
                assignee_ids: vec!["org2".into()],
                ..Default::default()
            })),
        },
        pb::BulkReassignRequest {
            payload: Some(Payload::Conversations(pb::ConversationBatch {
                conversation_ids: vec!["c1".into()],
            })),
        },
    ];
    let waiting = tokio::spawn(async move {
        let mut stream = client
            .bulk_reassign(as_actor("admin", tokio_stream::iter(messages)))
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    });
    app.until_blocked_by(pid).await;
    app.organizer("admin").await;
    held.rollback().await.unwrap();
    let status = expect_code(waiting.await.unwrap(), Code::PermissionDenied);
    assert_eq!(reason(&status), "ACTOR_CHANGED");
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("org1"));
}

/// Whether updating `user_id`'s row from another connection has to wait (it gives up after 200 ms).
async fn user_update_waits(app: &TestApp, user_id: &str) -> bool {
    let mut other = app.store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '200ms'")
        .execute(&mut *other)
        .await
        .unwrap();
    let result =
        sqlx::query("UPDATE users SET active = false WHERE campaign_id = $1 AND user_id = $2")
            .bind(CAMPAIGN)
            .bind(user_id)
            .execute(&mut *other)
            .await;
    match result {
        Ok(_) => false,
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03") => true,
        Err(other) => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn a_change_holds_its_actor_and_target_until_it_commits() {
    use assignment_service::service::{ActorCall, lock_actor};
    let app = campaign().await;
    let mut tx = app.store.begin().await.unwrap();
    let call = ActorCall {
        campaign_id: CAMPAIGN.into(),
        actor_id: "admin".into(),
        request_id: None,
        idempotency_key: None,
    };
    let (actor, others) = lock_actor(&mut tx, &call, &["org2"]).await.unwrap();
    assert!(actor.is_admin());
    assert_eq!(others.len(), 1);
    assert!(user_update_waits(&app, "admin").await, "a demotion waits");
    assert!(
        user_update_waits(&app, "org2").await,
        "a deactivation waits"
    );
    assert!(!user_update_waits(&app, "org1").await, "others are free");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn an_auto_assign_batch_holds_the_campaigns_organizers_until_it_commits() {
    use assignment_service::domain::auto_assign::Trigger;
    use assignment_service::store::auto_assign;
    let app = campaign().await;
    let mut tx = app.store.begin().await.unwrap();
    let cursor = auto_assign::lock(&mut tx, CAMPAIGN).await.unwrap();
    let trigger = Trigger {
        priority: Default::default(),
        trigger_id: "t1".into(),
        conversation_id: "c1".into(),
        member_id: None,
        member_tags: vec![],
        request_id: None,
    };
    let scope = auto_assign::BatchReads {
        enabled: true,
        last_assigned: true,
        drain: 0,
        default_capacity: 0,
        balanced: false,
    };
    let part = auto_assign::CampaignTriggers {
        campaign_id: CAMPAIGN,
        triggers: &[trigger],
    };
    let reads = auto_assign::read_batch(&mut tx, &[(part, scope)])
        .await
        .unwrap()
        .remove(CAMPAIGN)
        .unwrap();
    assert!(!cursor.auto_assign_enabled);
    assert_eq!(reads.entries[0].state.eligible, vec!["org1", "org2"]);
    assert!(user_update_waits(&app, "org1").await);
    assert!(user_update_waits(&app, "org2").await);
    assert!(
        !user_update_waits(&app, "admin").await,
        "admins are never eligible"
    );
    tx.rollback().await.unwrap();
}
