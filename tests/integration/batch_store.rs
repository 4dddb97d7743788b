//! The auto-assign batch's statements below gRPC, stage by stage on a fresh schema: what a batch's read
//! saw is numbered before its own events and what committed after it after them, the rotation starts after
//! the last assignment in feed order, and waiting conversations come first in queue order.

use assignment_service::domain::auto_assign::{
    AutoOutcome, Routing, RoutingMode, Trigger, Verdict, plan_batch,
};
use assignment_service::domain::model::{AssignmentAction, AssignmentSource};
use assignment_service::pb;
use assignment_service::store::auto_assign::{
    self, BatchReads, CampaignTriggers, CampaignWrite, EntrySource, WaitingAfter,
};
use assignment_service::store::conversations::{self, AssigneeChange};

use crate::harness::*;

/// Admin "admin", organizers o1 and o2 who may reply to everything, auto-assignment on.
async fn campaign() -> TestApp {
    let app = TestApp::start_configured(&NO_SWEEP).await;
    app.admin("admin").await;
    app.organizer("o1").await;
    app.organizer("o2").await;
    app.group("admin", "Everyone", &["o1", "o2"], true, scope_all())
        .await;
    app.enable_auto_assign().await;
    app
}

fn trigger(conversation: &str) -> Trigger {
    Trigger {
        priority: Default::default(),
        trigger_id: format!("t-{conversation}"),
        conversation_id: conversation.into(),
        member_id: Some(format!("m-{conversation}")),
        member_tags: vec![],
        request_id: None,
    }
}

fn reads(drain: i64) -> BatchReads {
    BatchReads {
        enabled: true,
        last_assigned: true,
        drain,
        default_capacity: 0,
        balanced: false,
    }
}

/// A batch of `triggers` of the campaign, stage by stage as `run_batch` runs it, with `between` run after
/// its read and before its write (and committed by then). Returns the verdicts.
async fn batch_with<F: std::future::Future<Output = ()>>(
    app: &TestApp,
    triggers: &[Trigger],
    between: F,
) -> Vec<Verdict> {
    let mut tx = app.store.begin_keyed().await.unwrap();
    let part = CampaignTriggers {
        campaign_id: CAMPAIGN,
        triggers,
    };
    let settings = auto_assign::lock_campaigns(&mut tx, &[CAMPAIGN], &[part], true)
        .await
        .unwrap()
        .remove(CAMPAIGN)
        .unwrap();
    let to_read = BatchReads {
        default_capacity: settings.default_capacity,
        ..reads(0)
    };
    let mut read = auto_assign::read_batch(&mut tx, &[(part, to_read)])
        .await
        .unwrap()
        .remove(CAMPAIGN)
        .unwrap();
    between.await;
    let routing = Routing {
        mode: RoutingMode::RoundRobin,
        loads: read.loads.take(),
        ..Routing::default()
    };
    let plan = plan_batch(
        true,
        read.last_assigned.as_deref(),
        routing,
        std::mem::take(&mut read.entries),
    );
    let write = CampaignWrite {
        priority_step_seconds: Default::default(),
        campaign_id: CAMPAIGN,
        triggers,
        plan: &plan,
        old_cursor: settings.last_auto_assignee_id.as_deref(),
        waiting: WaitingAfter {
            was: settings.has_waiting,
            has_waiting: settings.has_waiting,
        },
    };
    auto_assign::write_batch(&mut tx, &[write]).await.unwrap();
    tx.commit().await.unwrap();
    plan.verdicts()
}

/// The feed number of the conversation's only `action` event, once it has one.
async fn seq_of(app: &TestApp, conversation: &str, action: &str) -> i64 {
    for _ in 0..200 {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM assignment_events \
              WHERE campaign_id = $1 AND conversation_id = $2 AND action = $3",
        )
        .bind(CAMPAIGN)
        .bind(conversation)
        .bind(action)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        if let Some(seq) = seq {
            return seq;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{conversation}'s {action} was never numbered");
}

#[tokio::test]
async fn a_change_committed_after_a_batch_read_is_numbered_after_the_batch_own_events() {
    let app = campaign().await;
    app.conversation("c9", &[]).await;
    app.assign_as_admin("c9", "o1").await;
    let verdicts = batch_with(&app, &[trigger("c1")], app.resolve_as_admin("c9")).await;
    assert_eq!(
        verdicts[0].assigns(),
        Some("o2"),
        "the rotation went on after o1"
    );
    let assigned = seq_of(&app, "c1", "ASSIGN").await;
    let resolved = seq_of(&app, "c9", "RESOLVE").await;
    assert!(
        resolved > assigned,
        "the batch decided without the resolve, so the feed has it after the batch's ASSIGN \
         (resolve {resolved}, assign {assigned})"
    );
}

#[tokio::test]
async fn a_change_committed_before_a_batch_read_is_numbered_before_and_decided_on() {
    let app = campaign().await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            default_capacity: Some(1),
            ..Default::default()
        },
    )
    .await;
    app.conversation("c8", &[]).await;
    app.conversation("c9", &[]).await;
    app.assign_as_admin("c8", "o2").await;
    app.assign_as_admin("c9", "o1").await;
    // Both are full; the resolve commits unnumbered while the batch waits for the campaign's lock.
    let (held, _) = app
        .hold_locks("SELECT 1 FROM inbox_settings WHERE campaign_id = $1 FOR UPDATE")
        .await;
    let triggers = [trigger("c1")];
    let batch = batch_with(&app, &triggers, async {});
    let freeing = async {
        app.resolve_as_admin("c9").await;
        held.commit().await.unwrap();
    };
    let (verdicts, ()) = tokio::join!(batch, freeing);
    assert_eq!(verdicts[0].assigns(), Some("o1"), "the resolve freed o1");
    let resolved = seq_of(&app, "c9", "RESOLVE").await;
    let assigned = seq_of(&app, "c1", "ASSIGN").await;
    assert!(resolved < assigned, "resolve {resolved}, assign {assigned}");
}

#[tokio::test]
async fn the_rotation_starts_after_the_last_assignment_in_feed_order_not_by_event_id() {
    let app = campaign().await;
    app.conversation("c7", &[]).await;
    app.conversation("c8", &[]).await;
    // An assignment to o2 takes its event id first but commits last, after one to o1 was numbered.
    let (mut held, _) = app.hold_locks("SELECT 1").await;
    sqlx::query(
        "INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, source, stamp) \
         VALUES ($1, 'c8', 'ASSIGN', 'o2', 'MANUAL', 0)",
    )
    .bind(CAMPAIGN)
    .execute(&mut *held)
    .await
    .unwrap();
    app.assign_as_admin("c7", "o1").await;
    seq_of(&app, "c7", "ASSIGN").await;
    held.commit().await.unwrap();
    let verdicts = batch_with(&app, &[trigger("c1")], async {}).await;
    assert!(seq_of(&app, "c8", "ASSIGN").await > seq_of(&app, "c7", "ASSIGN").await);
    assert_eq!(
        verdicts[0].assigns(),
        Some("o1"),
        "o2's assignment is last in the feed, so o1 is next"
    );
}

/// A manual change of `conversation` from `from` to `to`, committed in a transaction of its own, straight
/// through the store (no sequencer runs after it).
async fn change_committed(app: &TestApp, conversation: &str, from: Option<&str>, to: &str) {
    let action = if from.is_some() {
        AssignmentAction::Reassign
    } else {
        AssignmentAction::Assign
    };
    let mut tx = app.store.pool().begin().await.unwrap();
    let change = AssigneeChange {
        campaign_id: CAMPAIGN,
        conversation_id: conversation,
        action,
        from,
        to: Some(to),
        actor_id: "admin",
        source: AssignmentSource::Manual,
        request_id: None,
    };
    conversations::set_assignee(&mut tx, change).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn events_are_numbered_in_the_order_their_writers_took_the_rows_not_by_event_id() {
    let app = campaign().await;
    app.conversation("c7", &[]).await;
    // c7 goes to o1, then to o2. Between the two, event ids start again lower: on a distributed
    // PostgreSQL each node draws them from its own range, so the second writer may take a smaller one.
    change_committed(&app, "c7", None, "o1").await;
    sqlx::raw_sql(
        "ALTER TABLE assignment_events ALTER COLUMN event_id SET MINVALUE -1000000 RESTART WITH -1000000",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    change_committed(&app, "c7", Some("o1"), "o2").await;
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT event_id FROM assignment_events WHERE campaign_id = $1 AND conversation_id = 'c7' \
          ORDER BY action = 'REASSIGN'",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert!(
        ids[1] < ids[0],
        "the reassignment took the smaller id: {ids:?}"
    );
    // Both wait unnumbered; the batch numbers them before its own, and reads who was assigned last.
    let verdicts = batch_with(&app, &[trigger("c1")], async {}).await;
    let assigned = seq_of(&app, "c7", "ASSIGN").await;
    let reassigned = seq_of(&app, "c7", "REASSIGN").await;
    assert!(
        assigned < reassigned,
        "the feed replays c7's changes in the order they were made: assign {assigned}, reassign {reassigned}"
    );
    assert_eq!(
        verdicts[0].assigns(),
        Some("o1"),
        "o2 was assigned last, so the rotation goes on with o1"
    );
}

#[tokio::test]
async fn events_that_share_no_row_are_numbered_in_the_order_they_were_made() {
    let app = campaign().await;
    app.conversation("c7", &[]).await;
    app.conversation("c8", &[]).await;
    // c7 changes twice, then c8 once, one call after another; all three wait unnumbered. c8's change
    // follows fewer changes of its row than c7's second: counting changes of the row alone, it would be
    // numbered between c7's two.
    change_committed(&app, "c7", None, "o1").await;
    change_committed(&app, "c7", Some("o1"), "o2").await;
    change_committed(&app, "c8", None, "o1").await;
    batch_with(&app, &[trigger("c1")], async {}).await;
    let order = [
        seq_of(&app, "c7", "ASSIGN").await,
        seq_of(&app, "c7", "REASSIGN").await,
        seq_of(&app, "c8", "ASSIGN").await,
    ];
    assert!(
        order.is_sorted(),
        "the feed numbers c7's assign, c7's reassign, c8's assign as {order:?}"
    );
}

#[tokio::test]
async fn a_batch_reads_waiting_conversations_first_in_queue_order_then_its_triggers() {
    let app = campaign().await;
    for organizer in ["o1", "o2"] {
        app.set_availability(organizer, pb::Availability::Away)
            .await;
    }
    for conversation in ["w2", "w1", "w3"] {
        let queued = app.auto_assign(conversation).await.outcome();
        assert_eq!(queued, pb::AutoAssignOutcome::Queued);
    }
    let mut tx = app.store.begin_keyed().await.unwrap();
    let triggers = [trigger("c1"), trigger("w1")];
    let part = CampaignTriggers {
        campaign_id: CAMPAIGN,
        triggers: &triggers,
    };
    auto_assign::lock_campaigns(&mut tx, &[CAMPAIGN], &[part], true)
        .await
        .unwrap();
    let read = auto_assign::read_batch(&mut tx, &[(part, reads(2))])
        .await
        .unwrap()
        .remove(CAMPAIGN)
        .unwrap();
    let order: Vec<(&str, bool)> = read
        .entries
        .iter()
        .map(|e| {
            let waiting = matches!(e.source, EntrySource::Waiting { .. });
            (e.state.conversation_id.as_str(), waiting)
        })
        .collect();
    assert_eq!(
        order,
        [("w2", true), ("w1", true), ("c1", false), ("w1", false)],
        "the first two waiting in queue order, then the triggers in batch order"
    );
    assert_eq!((read.queue_read, read.waiting()), (2, 2));
    assert!(read.entries.iter().all(|e| e.state.eligible.is_empty()));
    let plan = plan_batch(true, None, Routing::default(), read.entries);
    assert!(
        plan.entries
            .iter()
            .all(|p| matches!(&p.verdict, Verdict::Decided(d) if d.outcome == AutoOutcome::Queued))
    );
    tx.rollback().await.unwrap();
}

/// The conversation's history actions, in feed order, once `n` are numbered.
async fn feed_actions(app: &TestApp, conversation: &str, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let actions: Vec<String> = sqlx::query_scalar(
            "SELECT action FROM assignment_events \
              WHERE campaign_id = $1 AND conversation_id = $2 AND seq IS NOT NULL ORDER BY seq",
        )
        .bind(CAMPAIGN)
        .bind(conversation)
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        if actions.len() >= n {
            return actions;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} of {conversation}'s events were ever numbered");
}

#[tokio::test]
async fn a_change_a_batch_sees_through_its_lock_comes_before_the_batch_in_the_feed() {
    let app = campaign().await;
    app.conversation("c1", &[]).await;
    app.assign_as_admin("c1", "o1").await;
    // An unassign of c1 commits after the batch's read took its snapshot, while the read waits for c1.
    let (mut held, pid) = app.hold_locks("SELECT 1").await;
    let unassign = AssigneeChange {
        campaign_id: CAMPAIGN,
        conversation_id: "c1",
        action: AssignmentAction::Unassign,
        from: Some("o1"),
        to: None,
        actor_id: "admin",
        source: AssignmentSource::Manual,
        request_id: None,
    };
    conversations::set_assignee(&mut held, unassign)
        .await
        .unwrap();
    let triggers = [Trigger {
        member_id: None,
        ..trigger("c1")
    }];
    let commit = async {
        app.until_blocked_by(pid).await;
        held.commit().await.unwrap();
    };
    let (verdicts, ()) = tokio::join!(batch_with(&app, &triggers, async {}), commit);
    assert!(verdicts[0].assigns().is_some(), "{verdicts:?}");
    assert_eq!(
        feed_actions(&app, "c1", 3).await,
        ["ASSIGN", "UNASSIGN", "ASSIGN"],
        "the batch assigned c1 because it saw the unassign: the feed has them in that order"
    );
}
