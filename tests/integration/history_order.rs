//! History tells what happened in the order it happened: a conversation returned to the queue is unassigned
//! before it is queued, and one queue entry has one QUEUED event.

use assignment_service::domain::auto_assign::{AutoOutcome, Trigger};
use assignment_service::pb;
use assignment_service::service::auto_assign::{CampaignBatch, run_batch};

use crate::harness::*;

/// Admin "admin", organizers `organizers` who may reply to everything, AVAILABLE; auto-assignment on with
/// RETURN_TO_QUEUE.
async fn campaign(organizers: &[&str]) -> TestApp {
    let app = TestApp::start_configured(&NO_SWEEP).await;
    app.admin("admin").await;
    for org in organizers {
        app.organizer(org).await;
    }
    app.group("admin", "Everyone", organizers, true, scope_all())
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
    app
}

async fn actions(app: &TestApp, conversation: &str) -> Vec<pb::AssignmentAction> {
    app.history(conversation)
        .await
        .iter()
        .map(|e| e.action())
        .collect()
}

#[tokio::test]
async fn a_conversation_returned_to_the_queue_is_unassigned_then_queued() {
    let app = campaign(&["o1"]).await;
    for id in ["c1", "c2", "c3"] {
        assert_eq!(
            app.auto_assign(id).await.outcome(),
            pb::AutoAssignOutcome::Assigned
        );
    }
    // Nobody else is available: they stay in the queue.
    app.set_availability("o1", pb::Availability::Away).await;
    assert_eq!(app.count("waiting_conversations").await, 3);
    use pb::AssignmentAction::*;
    for id in ["c1", "c2", "c3"] {
        assert_eq!(actions(&app, id).await, [Assign, Unassign, Queued], "{id}");
    }
}

#[tokio::test]
async fn two_triggers_of_one_new_conversation_in_one_batch_queue_it_once() {
    let app = campaign(&["o1"]).await;
    app.set_availability("o1", pb::Availability::Away).await;
    let trigger = |trigger_id: &str| Trigger {
        priority: Default::default(),
        trigger_id: trigger_id.into(),
        conversation_id: "c1".into(),
        member_id: Some("m1".into()),
        member_tags: vec![],
        request_id: None,
    };
    // One batch, as the coalescer makes of two deliveries arriving while the campaign's last batch runs.
    let part = CampaignBatch {
        campaign_id: CAMPAIGN.into(),
        triggers: vec![trigger("t1"), trigger("t2")],
    };
    let outcome = run_batch(&app.store, &[part]).await.unwrap().remove(0);
    for reply in outcome.replies {
        assert_eq!(reply.unwrap().decision.outcome, AutoOutcome::Queued);
    }
    assert_eq!(app.count("waiting_conversations").await, 1);
    assert_eq!(actions(&app, "c1").await, [pb::AssignmentAction::Queued]);
}
