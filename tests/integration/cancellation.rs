//! Calls cut off at random points (a client's deadline, a client that gives up) leave nothing behind: no
//! session idle in a transaction, no later call running inside a cancelled call's transaction, and every
//! call's effect all or nothing.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use assignment_service::pb;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tonic::{Code, Request, Status};

use crate::harness::{
    CAMPAIGN, TestApp, as_actor, auto_assign_request, config, fresh_schema_url, scope_all, system,
};

const ORGANIZERS: [&str; 4] = ["o1", "o2", "o3", "o4"];
const CONVERSATIONS: usize = 24;

/// A small deterministic generator (SplitMix64), so a failing run can be repeated from its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

/// How a call of the storm is cut off.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The client's deadline (`grpc-timeout`): the server drops the call when it passes.
    Deadline(Duration),
    /// The client gives up and resets the stream.
    ClientGivesUp(Duration),
    /// Not cut off.
    Never,
}

/// What one call of the storm did.
struct Outcome {
    request_id: String,
    conversation: Option<String>,
    /// `Ok(changed)` or the status code.
    result: Result<bool, Code>,
}

fn conversation_id(n: u64) -> String {
    format!("c{n:02}")
}

/// `request` with its request id and, when cut by a deadline, that deadline.
fn prepared<T>(mut request: Request<T>, request_id: &str, cut: Cut) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    if let Cut::Deadline(deadline) = cut {
        request.set_timeout(deadline);
    }
    request
}

/// One call of a writing RPC, chosen by `dice`, with its request id and cut.
async fn call(app: &TestApp, extra_group: &str, dice: &mut Dice, n: usize, cut: Cut) -> Outcome {
    let request_id = format!("storm-{n}");
    let conversation = conversation_id(dice.below(CONVERSATIONS as u64));
    let organizer = dice.pick(&ORGANIZERS);
    let id = request_id.clone();
    macro_rules! prepare {
        ($request:expr) => {
            prepared($request, &id, cut)
        };
    }
    let mut assignments = app.assignments().await;
    let mut groups = app.groups().await;
    let mut directory = app.directory().await;
    let extra_group = extra_group.to_owned();
    let kind = dice.below(20);
    let conversation_of = |kind| (kind <= 5).then(|| conversation.clone());
    let conversation_for_call = conversation.clone();
    let future = async move {
        let conversation = conversation_for_call;
        let changed = |r: Result<tonic::Response<bool>, Status>| r.map(|r| r.into_inner());
        match kind {
            0 => changed(
                assignments
                    .assign_conversation(prepare!(as_actor(
                        "admin",
                        pb::AssignConversationRequest {
                            conversation_id: conversation,
                            assignee_id: organizer.into(),
                            expected_version: None,
                        },
                    )))
                    .await
                    .map(|r| r.map(|r| r.changed)),
            ),
            1 => changed(
                assignments
                    .unassign_conversation(prepare!(as_actor(
                        "admin",
                        pb::UnassignConversationRequest {
                            return_to_queue: false,
                            conversation_id: conversation,
                            expected_version: None,
                        },
                    )))
                    .await
                    .map(|r| r.map(|r| r.changed)),
            ),
            2 => changed(
                assignments
                    .reassign_conversation(prepare!(as_actor(
                        "admin",
                        pb::ReassignConversationRequest {
                            conversation_id: conversation,
                            assignee_id: organizer.into(),
                            expected_version: None,
                        },
                    )))
                    .await
                    .map(|r| r.map(|r| r.changed)),
            ),
            3 => changed(
                assignments
                    .resolve_conversation(prepare!(as_actor(
                        organizer,
                        pb::ResolveConversationRequest {
                            conversation_id: conversation,
                        },
                    )))
                    .await
                    .map(|r| r.map(|r| r.changed)),
            ),
            4 => changed(
                assignments
                    .reopen_conversation(prepare!(as_actor(
                        "admin",
                        pb::ReopenConversationRequest {
                            conversation_id: conversation,
                        },
                    )))
                    .await
                    .map(|r| r.map(|r| r.changed)),
            ),
            5 => changed(
                // An organizer takes it for themselves.
                assignments
                    .assign_conversation(prepare!(as_actor(
                        organizer,
                        pb::AssignConversationRequest {
                            conversation_id: conversation,
                            assignee_id: organizer.into(),
                            expected_version: None,
                        },
                    )))
                    .await
                    .map(|r| r.map(|r| r.changed)),
            ),
            6 => changed(
                assignments
                    .auto_assign_conversation(prepare!(system(
                        CAMPAIGN,
                        auto_assign_request(&format!("new-{n}")),
                    )))
                    .await
                    .map(|r| r.map(|_| true)),
            ),
            7 => changed(
                assignments
                    .set_availability(prepare!(system(
                        CAMPAIGN,
                        pb::SetAvailabilityRequest {
                            user_id: organizer.into(),
                            availability: if n.is_multiple_of(2) {
                                pb::Availability::Away
                            } else {
                                pb::Availability::Available
                            }
                            .into(),
                        },
                    )))
                    .await
                    .map(|r| r.map(|r| r.changed)),
            ),
            8 => changed(
                assignments
                    .set_capacity(prepare!(as_actor(
                        "admin",
                        pb::SetCapacityRequest {
                            user_id: organizer.into(),
                            capacity: Some((n % 5) as i32),
                        },
                    )))
                    .await
                    .map(|r| r.map(|_| true)),
            ),
            9 => changed(
                assignments
                    .update_inbox_settings(prepare!(as_actor(
                        "admin",
                        pb::UpdateInboxSettingsRequest {
                            auto_assign_enabled: Some(!n.is_multiple_of(3)),
                            ..Default::default()
                        },
                    )))
                    .await
                    .map(|r| r.map(|_| true)),
            ),
            11 => {
                let request = pb::BulkUnassignRequest {
                    conversations: Some(pb::ConversationBatch {
                        conversation_ids: three_from(n),
                    }),
                };
                let request = prepare!(as_actor("admin", tokio_stream::iter(vec![request])));
                match assignments.bulk_unassign(request).await {
                    Ok(response) => drained(response.into_inner()).await,
                    Err(status) => Err(status),
                }
            }
            12 => {
                let messages = vec![
                    pb::BulkReassignRequest {
                        payload: Some(pb::bulk_reassign_request::Payload::Options(
                            pb::BulkAssignOptions {
                                assignee_ids: vec![organizer.into()],
                                ..Default::default()
                            },
                        )),
                    },
                    pb::BulkReassignRequest {
                        payload: Some(pb::bulk_reassign_request::Payload::Conversations(
                            pb::ConversationBatch {
                                conversation_ids: three_from(n),
                            },
                        )),
                    },
                ];
                let request = prepare!(as_actor("admin", tokio_stream::iter(messages)));
                match assignments.bulk_reassign(request).await {
                    Ok(response) => drained(response.into_inner()).await,
                    Err(status) => Err(status),
                }
            }
            13 => {
                let organizer_ids = vec![organizer.to_owned()];
                if n.is_multiple_of(2) {
                    groups
                        .add_organizers(prepare!(as_actor(
                            "admin",
                            pb::AddOrganizersRequest {
                                access_group_id: extra_group,
                                organizer_ids,
                            },
                        )))
                        .await
                        .map(|_| true)
                } else {
                    groups
                        .remove_organizers(prepare!(as_actor(
                            "admin",
                            pb::RemoveOrganizersRequest {
                                access_group_id: extra_group,
                                organizer_ids,
                            },
                        )))
                        .await
                        .map(|_| true)
                }
            }
            14 => groups
                .update_access_group(prepare!(as_actor(
                    "admin",
                    pb::UpdateAccessGroupRequest {
                        access_group_id: extra_group,
                        name: Some(format!("extra-{n}")),
                        ..Default::default()
                    },
                )))
                .await
                .map(|_| true),
            15 => {
                let created = groups
                    .create_access_group(prepare!(as_actor(
                        "admin",
                        pb::CreateAccessGroupRequest {
                            name: format!("g-{n}"),
                            permissions: Some(pb::AccessGroupPermissions {
                                view: true,
                                reply: false,
                            }),
                            scope: Some(scope_all()),
                            organizer_ids: vec![organizer.into()],
                        },
                    )))
                    .await;
                match created {
                    Ok(created) => groups
                        .delete_access_group(prepare!(as_actor(
                            "admin",
                            pb::DeleteAccessGroupRequest {
                                access_group_id: created
                                    .into_inner()
                                    .access_group
                                    .unwrap()
                                    .access_group_id,
                            },
                        )))
                        .await
                        .map(|_| true),
                    Err(status) => Err(status),
                }
            }
            16 => directory
                .upsert_user(prepare!(system(
                    CAMPAIGN,
                    pb::UpsertUserRequest {
                        user_id: format!("u{}", n % 8),
                        role: pb::Role::Organizer.into(),
                        display_name: format!("User {n}"),
                    },
                )))
                .await
                .map(|_| true),
            17 => directory
                .deactivate_user(prepare!(system(
                    CAMPAIGN,
                    pb::DeactivateUserRequest {
                        user_id: format!("u{}", n % 8),
                    },
                )))
                .await
                .map(|_| true),
            18 => directory
                .upsert_conversation(prepare!(system(
                    CAMPAIGN,
                    pb::UpsertConversationRequest {
                        conversation_id: conversation,
                        member_id: format!("member-{n}"),
                        member_tags: vec![format!("tag-{}", n % 3)],
                    },
                )))
                .await
                .map(|_| true),
            _ => {
                // A bulk stream: options, then one batch of three conversations.
                let messages = vec![
                    pb::BulkAssignRequest {
                        payload: Some(pb::bulk_assign_request::Payload::Options(
                            pb::BulkAssignOptions {
                                assignee_ids: ORGANIZERS.iter().map(|o| o.to_string()).collect(),
                                ..Default::default()
                            },
                        )),
                    },
                    pb::BulkAssignRequest {
                        payload: Some(pb::bulk_assign_request::Payload::Conversations(
                            pb::ConversationBatch {
                                conversation_ids: three_from(n),
                            },
                        )),
                    },
                ];
                let request = prepare!(as_actor("admin", tokio_stream::iter(messages)));
                match assignments.bulk_assign(request).await {
                    Ok(response) => drained(response.into_inner()).await,
                    Err(status) => Err(status),
                }
            }
        }
    };
    let result = match cut {
        Cut::ClientGivesUp(after) => match tokio::time::timeout(after, future).await {
            Ok(result) => result,
            Err(_) => Err(Status::cancelled("the client gave up")),
        },
        Cut::Deadline(_) | Cut::Never => future.await,
    };
    Outcome {
        request_id,
        conversation: conversation_of(kind),
        result: result.map_err(|status| status.code()),
    }
}

/// Three conversations from the `n`-th on, for a bulk call.
fn three_from(n: usize) -> Vec<String> {
    (0..3)
        .map(|k| conversation_id((n as u64 + k) % CONVERSATIONS as u64))
        .collect()
}

/// Reads a bulk stream to its end: `Ok(true)` when it ended without an error.
async fn drained<T>(mut stream: tonic::Streaming<T>) -> Result<bool, Status> {
    while let Some(message) = stream.next().await {
        message?;
    }
    Ok(true)
}

/// Log output of this test's thread (the server runs on it too: a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The states of this server's database sessions, waiting up to a few seconds for them to settle.
async fn settled_sessions(app: &TestApp, application_name: &str) -> Vec<(i32, String)> {
    let mut sessions = Vec::new();
    for _ in 0..100 {
        sessions = sqlx::query_as::<_, (i32, String)>(
            "SELECT pid, coalesce(state, '') FROM pg_stat_activity \
              WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(application_name)
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        if sessions.iter().all(|(_, state)| state == "idle") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sessions
}

#[tokio::test]
async fn calls_cut_off_at_random_points_leave_no_transaction_open_and_no_half_written_change() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let _capture = tracing::subscriber::set_default(subscriber);

    // The harness's small pool (8): cancelled calls' connections are soon handed to others.
    let application_name = format!("cancel-{}", uuid::Uuid::new_v4().simple());
    let url = format!(
        "{}&application_name={application_name}",
        fresh_schema_url().await
    );
    let app = TestApp::start_with(&config(&url, &[])).await;
    app.admin("admin").await;
    for organizer in ORGANIZERS {
        app.organizer(organizer).await;
    }
    app.group("admin", "everyone", &ORGANIZERS, true, scope_all())
        .await;
    let extra_group = app
        .group("admin", "extra", &[], true, scope_all())
        .await
        .access_group_id;
    for n in 0..CONVERSATIONS as u64 {
        app.conversation(&conversation_id(n), &[]).await;
    }
    app.enable_auto_assign().await;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut dice = Dice(seed);
    let mut outcomes = Vec::new();
    let mut running = FuturesUnordered::new();
    // Thousands of calls, 12 at a time, most cut off somewhere between 0 and 8 ms.
    for n in 0..2400 {
        let cut = match dice.below(3) {
            0 => Cut::Deadline(Duration::from_micros(500 + dice.below(7500))),
            1 => Cut::ClientGivesUp(Duration::from_micros(dice.below(8000))),
            _ => Cut::Never,
        };
        let call_dice = Dice(dice.below(u64::MAX));
        let (app, extra_group) = (&app, &extra_group);
        running.push(Box::pin(async move {
            let mut call_dice = call_dice;
            call(app, extra_group, &mut call_dice, n, cut).await
        }));
        if running.len() >= 12 {
            outcomes.push(running.next().await.unwrap());
        }
    }
    while let Some(outcome) = running.next().await {
        outcomes.push(outcome);
    }
    drop(running);
    // Cut off or answered by the rules: never a broken connection or a server fault.
    let broken: Vec<_> = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o.result,
                Err(Code::Internal | Code::Unknown | Code::Unavailable)
            )
        })
        .map(|o| (&o.request_id, o.result))
        .collect();
    assert!(
        broken.is_empty(),
        "calls failed for the server's sake: {broken:?}"
    );

    // Every session of the server is idle again: none was left inside a transaction.
    let sessions = settled_sessions(&app, &application_name).await;
    assert!(!sessions.is_empty(), "the server's sessions are visible");
    let stuck: Vec<_> = sessions.iter().filter(|(_, s)| s != "idle").collect();
    assert!(
        stuck.is_empty(),
        "sessions left in a transaction: {stuck:?}"
    );

    // Calls made after the storm run in transactions of their own and all get a real answer.
    for n in 100_000..100_200 {
        let mut dice = Dice(n as u64);
        let outcome = call(&app, &extra_group, &mut dice, n, Cut::Never).await;
        if let Err(code) = outcome.result {
            assert!(
                !matches!(
                    code,
                    Code::Unavailable | Code::Internal | Code::Cancelled | Code::DeadlineExceeded
                ),
                "a call after the storm failed with {code:?}"
            );
        }
    }
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        !logged.contains("transaction in progress"),
        "a call ran inside another call's transaction, or ended one that was not its own:\n{logged}"
    );

    // All or nothing: each conversation's history replays to its row, and each call's change is there
    // exactly when the call said so (or when it was cut off and may have been applied).
    let events: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT conversation_id, action, to_user_id, request_id FROM assignment_events \
          WHERE campaign_id = $1 AND conversation_id IS NOT NULL ORDER BY event_id",
    )
    .bind(CAMPAIGN)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let mut replayed: HashMap<&str, (Option<&str>, &str)> = HashMap::new();
    for (conversation, action, to, _) in &events {
        let state = replayed.entry(conversation).or_insert((None, "OPEN"));
        match action.as_str() {
            "RESOLVE" => state.1 = "RESOLVED",
            "REOPEN" => state.1 = "OPEN",
            "QUEUED" | "LEFT_QUEUE" => {}
            _ => state.0 = to.as_deref(),
        }
    }
    for (conversation, (assignee, status)) in &replayed {
        let (stored_assignee, stored_status, _) = app.stored(conversation).await;
        assert_eq!(
            (stored_assignee.as_deref(), stored_status.as_str()),
            (*assignee, *status),
            "{conversation}: its history does not replay to its row"
        );
    }
    for outcome in &outcomes {
        let Some(conversation) = &outcome.conversation else {
            continue;
        };
        let written = events
            .iter()
            .any(|(c, _, _, r)| c == conversation && r.as_deref() == Some(&outcome.request_id));
        match outcome.result {
            Ok(changed) => assert_eq!(
                written, changed,
                "{}: answered changed={changed}",
                outcome.request_id
            ),
            Err(Code::Cancelled | Code::DeadlineExceeded) => {}
            Err(code) => assert!(
                !written,
                "{}: refused with {code:?} but written",
                outcome.request_id
            ),
        }
    }
}

fn with_request_id<T>(request_id: &str, request: Request<T>) -> Request<T> {
    prepared(request, request_id, Cut::Never)
}

fn assign(conversation: &str, assignee: &str) -> pb::AssignConversationRequest {
    pb::AssignConversationRequest {
        conversation_id: conversation.into(),
        assignee_id: assignee.into(),
        expected_version: None,
    }
}

#[tokio::test]
async fn a_retry_with_the_same_request_id_learns_the_outcome_and_changes_nothing_twice() {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.admin("admin2").await;
    app.organizer("o1").await;
    app.group("admin", "everyone", &["o1"], true, scope_all())
        .await;
    app.conversation("c1", &[]).await;
    let mut client = app.assignments().await;

    // Cut off by its deadline until one is cut before answering, then retried with the same id: the
    // retry tells whether the first went through, and the change is made once.
    let mut cut = 0;
    for attempt in 0..200 {
        let request_id = format!("assign-{attempt}");
        let mut request = with_request_id(&request_id, as_actor("admin", assign("c1", "o1")));
        request.set_timeout(Duration::from_micros(200 + attempt * 20));
        let first = client.assign_conversation(request).await;
        let retried = client
            .assign_conversation(with_request_id(
                &request_id,
                as_actor("admin", assign("c1", "o1")),
            ))
            .await
            .expect("the retry is answered")
            .into_inner();
        let history = app.history("c1").await;
        let made: Vec<_> = history
            .iter()
            .filter(|e| e.request_id == request_id)
            .collect();
        assert_eq!(made.len(), 1, "the change is made exactly once");
        assert!(retried.changed, "the retry says the change was made");
        assert_eq!(
            retried.conversation.unwrap().assignee_id.as_deref(),
            Some("o1")
        );
        if first.is_err() {
            cut += 1;
        }
        client
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
        if cut >= 3 {
            break;
        }
    }
    assert!(
        cut > 0,
        "some first attempts were cut off by their deadline"
    );

    // A retry after someone else changed the conversation undoes nothing.
    client
        .assign_conversation(with_request_id(
            "r-1",
            as_actor("admin", assign("c1", "o1")),
        ))
        .await
        .unwrap();
    client
        .unassign_conversation(as_actor(
            "admin2",
            pb::UnassignConversationRequest {
                return_to_queue: false,
                conversation_id: "c1".into(),
                expected_version: None,
            },
        ))
        .await
        .unwrap();
    let retried = client
        .assign_conversation(with_request_id(
            "r-1",
            as_actor("admin", assign("c1", "o1")),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(retried.changed);
    assert_eq!(
        retried.conversation.unwrap().assignee_id,
        None,
        "answered with the conversation as it is now"
    );
    assert_eq!(app.stored("c1").await.0, None, "the retry changed nothing");

    // Resolve, reopen by another admin, then the resolve retried: it stays open.
    let resolve = |id: &str| {
        with_request_id(
            id,
            as_actor(
                "admin",
                pb::ResolveConversationRequest {
                    conversation_id: "c1".into(),
                },
            ),
        )
    };
    client.resolve_conversation(resolve("r-2")).await.unwrap();
    client
        .reopen_conversation(as_actor(
            "admin2",
            pb::ReopenConversationRequest {
                conversation_id: "c1".into(),
            },
        ))
        .await
        .unwrap();
    assert!(
        client
            .resolve_conversation(resolve("r-2"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert_eq!(app.stored("c1").await.1, "OPEN");

    // The key is the caller's and the actor's: another actor with the same id, or a call without one,
    // is a new change.
    let other = client
        .assign_conversation(with_request_id(
            "r-1",
            as_actor("admin2", assign("c1", "o1")),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(other.changed);
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o1"));
}
