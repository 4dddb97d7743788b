//! Drains decide on fresh, locked facts: a waiting conversation that is resolved (or resolved and reopened)
//! by a transaction committing after a drain read the queue, but before it locked the conversation, is not
//! drained. The race is made deterministic by holding the conversation's row lock from the test.

use std::time::Duration;

use assignment_service::domain::model::ConversationStatus;
use assignment_service::pb;
use assignment_service::store::{auto_assign, conversations};

use crate::harness::*;

const LOCK_C1: &str =
    "SELECT 1 FROM conversations WHERE campaign_id = $1 AND conversation_id = 'c1' FOR UPDATE";

/// Admin "admin", organizer o1 who may reply to everything, AWAY; auto-assignment on; c1 waits.
async fn campaign_with_c1_waiting() -> TestApp {
    let app = TestApp::start_configured(&NO_SWEEP).await;
    app.admin("admin").await;
    app.organizer("o1").await;
    app.set_availability("o1", pb::Availability::Away).await;
    app.group("admin", "Everyone", &["o1"], true, scope_all())
        .await;
    app.enable_auto_assign().await;
    assert_eq!(
        app.auto_assign("c1").await.outcome(),
        pb::AutoAssignOutcome::Queued
    );
    app
}

/// Waits until `n` backends wait, directly or behind one another, on the locks `pid` holds. Only this
/// chain counts: another test's waiters must not end the wait early, because a newcomer that reaches the
/// row just as the holder rolls back may take it before the woken first waiter does (PostgreSQL promises
/// no order then), and the test would race instead of queueing.
async fn until_lock_waiters(app: &TestApp, pid: i32, n: i64) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "WITH RECURSIVE chain AS ( \
               SELECT $1::int AS pid \
               UNION \
               SELECT a.pid FROM pg_stat_activity a JOIN chain ON chain.pid = ANY(pg_blocking_pids(a.pid))) \
             SELECT count(*) - 1 FROM chain",
        )
        .bind(pid)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} backends ever waited for the held lock");
}

#[tokio::test]
async fn a_waiting_conversation_resolved_while_its_drain_waits_for_it_is_not_assigned() {
    let app = campaign_with_c1_waiting().await;
    let (held, pid) = app.hold_locks(LOCK_C1).await;
    // The resolve waits for c1 first...
    let resolve = {
        let mut client = app.assignments().await;
        tokio::spawn(async move {
            client
                .resolve_conversation(as_actor(
                    "admin",
                    pb::ResolveConversationRequest {
                        conversation_id: "c1".into(),
                    },
                ))
                .await
        })
    };
    app.until_blocked_by(pid).await;
    // ...then o1 comes back: the drain reads c1 in the queue and waits for it behind the resolve.
    app.set_availability("o1", pb::Availability::Available)
        .await;
    until_lock_waiters(&app, pid, 2).await;
    // A trigger's answer comes from the campaign's next batch, so only after the drain's batch ended.
    let next = {
        let mut client = app.assignments().await;
        tokio::spawn(async move {
            client
                .auto_assign_conversation(system(CAMPAIGN, auto_assign_request("c2")))
                .await
        })
    };
    held.rollback().await.unwrap();
    resolve.await.unwrap().expect("the resolve succeeds");
    let next = next.await.unwrap().expect("the trigger succeeds");
    assert_eq!(next.into_inner().assignee_id.as_deref(), Some("o1"));

    let (assignee, status, _) = app.stored("c1").await;
    assert_eq!(
        (assignee.as_deref(), status.as_str()),
        (None, "RESOLVED"),
        "a resolved conversation is nobody's new work"
    );
    let actions: Vec<_> = app.history("c1").await.iter().map(|e| e.action()).collect();
    use pb::AssignmentAction::*;
    assert_eq!(actions.len(), 3, "{actions:?}");
    for action in [Queued, Resolve, LeftQueue] {
        assert!(actions.contains(&action), "{actions:?}");
    }
    assert_eq!(app.count("waiting_conversations").await, 0);
}

/// Below gRPC: the batch's read, on the rows as they are once locked. Resolved, or resolved and reopened
/// (open and unassigned, but no longer waiting): either way c1 is not read as a conversation to drain.
#[tokio::test]
async fn a_drains_read_leaves_out_what_left_the_queue_before_its_lock() {
    for reopened in [false, true] {
        let app = campaign_with_c1_waiting().await;
        let (mut held, pid) = app.hold_locks(LOCK_C1).await;
        conversations::set_status(
            &mut held,
            CAMPAIGN,
            "c1",
            ConversationStatus::Resolved,
            "admin",
            None,
        )
        .await
        .unwrap();
        if reopened {
            conversations::set_status(
                &mut held,
                CAMPAIGN,
                "c1",
                ConversationStatus::Open,
                "admin",
                None,
            )
            .await
            .unwrap();
        }
        let mut tx = app.store.begin_keyed().await.unwrap();
        let cursor = auto_assign::lock(&mut tx, CAMPAIGN).await.unwrap();
        assert!(cursor.has_waiting);
        let scope = auto_assign::BatchReads {
            enabled: true,
            last_assigned: false,
            drain: 10,
            default_capacity: 0,
            balanced: false,
        };
        let part = auto_assign::CampaignTriggers {
            campaign_id: CAMPAIGN,
            triggers: &[],
        };
        let parts = [(part, scope)];
        // The read takes its snapshot while the change is uncommitted, then waits for c1's lock.
        let (reads, committed) = tokio::join!(auto_assign::read_batch(&mut tx, &parts), async {
            app.until_blocked_by(pid).await;
            held.commit().await
        });
        committed.unwrap();
        let reads = reads.unwrap().remove(CAMPAIGN).unwrap();
        assert!(
            reads.entries.is_empty(),
            "reopened {reopened}: nothing to drain, read {:?}",
            reads.entries
        );
        assert_eq!(reads.waiting(), 0);
        assert_eq!(reads.queue_read, 1, "the queue's row was read");
        tx.rollback().await.unwrap();
    }
}
