//! Caller authentication, load shedding, deadlines, request ids and metrics.

use std::time::Duration;

use assignment_service::auth::hash_token;
use assignment_service::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::harness::*;

const SYSTEM_TOKEN: &str = "flow-builder-secret";
const USER_TOKEN: &str = "messaging-secret";

/// A tokens file with one system and one user token, as an operator would write it.
fn tokens_file() -> String {
    let path = std::env::temp_dir().join(format!("tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        format!(
            "flow-builder system {}\nmessaging user {}\n",
            hash_token(SYSTEM_TOKEN),
            hash_token(USER_TOKEN)
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

fn with_token<T>(mut request: tonic::Request<T>, token: &str) -> tonic::Request<T> {
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn upsert(user_id: &str, role: pb::Role) -> pb::UpsertUserRequest {
    pb::UpsertUserRequest {
        user_id: user_id.into(),
        role: role.into(),
        display_name: String::new(),
    }
}

#[tokio::test]
async fn callers_need_a_valid_token_of_the_right_scope() {
    let tokens = tokens_file();
    let app = TestApp::start_configured(&["--tokens-file", &tokens]).await;
    let mut directory = app.directory().await;

    let status = expect_code(
        directory
            .upsert_user(system(CAMPAIGN, upsert("admin", pb::Role::Admin)))
            .await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("Bearer"));
    expect_code(
        directory
            .upsert_user(with_token(
                system(CAMPAIGN, upsert("admin", pb::Role::Admin)),
                "guess",
            ))
            .await,
        Code::Unauthenticated,
    );
    let status = expect_code(
        directory
            .upsert_user(with_token(
                system(CAMPAIGN, upsert("admin", pb::Role::Admin)),
                USER_TOKEN,
            ))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("system-scoped"));
    assert_eq!(
        app.count("users").await,
        0,
        "refused calls reach no handler"
    );

    directory
        .upsert_user(with_token(
            system(CAMPAIGN, upsert("admin", pb::Role::Admin)),
            SYSTEM_TOKEN,
        ))
        .await
        .unwrap();
    let mut auto = pb::AutoAssignConversationRequest {
        priority: Default::default(),
        conversation_id: "c1".into(),
        trigger_id: "t1".into(),
        member_id: "m1".into(),
        member_tags: vec![],
    };
    expect_code(
        app.assignments()
            .await
            .auto_assign_conversation(with_token(system(CAMPAIGN, auto.clone()), USER_TOKEN))
            .await,
        Code::PermissionDenied,
    );
    auto.trigger_id = "t2".into();
    app.assignments()
        .await
        .auto_assign_conversation(with_token(system(CAMPAIGN, auto), SYSTEM_TOKEN))
        .await
        .unwrap();
    // A user-scoped token acts for the user in x-actor-id.
    let settings = app
        .assignments()
        .await
        .get_inbox_settings(with_token(
            as_actor("admin", pb::GetInboxSettingsRequest {}),
            USER_TOKEN,
        ))
        .await
        .unwrap();
    assert!(!settings.into_inner().settings.unwrap().auto_assign_enabled);
    // Health probes need no token.
    app.health("").await.unwrap();
}

/// Holds conversation `c1`'s row lock from outside the service until dropped.
async fn lock_conversation(app: &TestApp) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM conversations WHERE conversation_id = 'c1' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

fn assign_c1() -> pb::AssignConversationRequest {
    pb::AssignConversationRequest {
        conversation_id: "c1".into(),
        assignee_id: "admin".into(),
        expected_version: None,
    }
}

#[tokio::test]
async fn overload_is_shed_fast_and_the_service_recovers() {
    let app = TestApp::start_configured(&["--max-concurrent-calls", "1"]).await;
    app.admin("admin").await;
    app.conversation("c1", &[]).await;
    let lock = lock_conversation(&app).await;
    // This call waits on the row lock and holds the only slot.
    let mut stuck_client = app.assignments().await;
    let stuck = tokio::spawn(async move {
        stuck_client
            .assign_conversation(as_actor("admin", assign_c1()))
            .await
    });
    // Once it holds the slot, the next call is shed at once.
    let mut shed = None;
    for _ in 0..100 {
        let started = std::time::Instant::now();
        let result = app
            .assignments()
            .await
            .get_conversation(as_actor(
                "admin",
                pb::GetConversationRequest {
                    conversation_id: "c1".into(),
                },
            ))
            .await;
        if let Err(status) = result {
            shed = Some((status, started.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, took) = shed.expect("a call is shed while the only slot is taken");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(took < Duration::from_secs(2), "shed at once, not queued");
    assert!(status.message().contains("retry"));
    // Health stays answerable under load.
    app.health("").await.unwrap();

    lock.rollback().await.unwrap();
    stuck
        .await
        .unwrap()
        .expect("the waiting call completes once the lock is gone");
    app.assignments()
        .await
        .get_conversation(as_actor(
            "admin",
            pb::GetConversationRequest {
                conversation_id: "c1".into(),
            },
        ))
        .await
        .expect("recovered");
}

#[tokio::test]
async fn a_call_past_its_deadline_leaves_no_partial_change() {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.conversation("c1", &[]).await;
    let lock = lock_conversation(&app).await;
    let mut request = as_actor("admin", assign_c1());
    request.set_timeout(Duration::from_millis(300));
    let result = app.assignments().await.assign_conversation(request).await;
    let status = result.expect_err("the deadline passes while the row is locked");
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    // The client gives up at its deadline; the server's own copy of it (grpc-timeout) fires a moment later
    // and drops the call, rolling its transaction back. Release the row only after that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.stored("c1").await.0, None);
    assert_eq!(app.count("assignment_events").await, 0);
}

#[tokio::test]
async fn request_ids_come_back_and_are_recorded_on_history() {
    let app = TestApp::start().await;
    app.admin("admin").await;
    app.conversation("c1", &[]).await;
    let mut request = as_actor("admin", assign_c1());
    request
        .metadata_mut()
        .insert("x-request-id", "req-abc-123".parse().unwrap());
    let response = app
        .assignments()
        .await
        .assign_conversation(request)
        .await
        .unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "req-abc-123"
    );
    let recorded: Option<String> = sqlx::query_scalar("SELECT request_id FROM assignment_events")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(recorded.as_deref(), Some("req-abc-123"));

    // Without one, the service makes one up and says which.
    let response = app
        .assignments()
        .await
        .get_conversation(as_actor(
            "admin",
            pb::GetConversationRequest {
                conversation_id: "c1".into(),
            },
        ))
        .await
        .unwrap();
    let generated = response
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok());
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let app = TestApp::start_configured(&["--max-message-bytes", "1024"]).await;
    let request = pb::UpsertConversationRequest {
        conversation_id: "c1".into(),
        member_id: "m1".into(),
        member_tags: (0..90)
            .map(|i| format!("a-rather-long-member-tag-{i}"))
            .collect(),
    };
    let status = app
        .directory()
        .await
        .upsert_conversation(system(CAMPAIGN, request))
        .await
        .expect_err("over the limit");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert_eq!(app.count("conversations").await, 0);
}

#[tokio::test]
async fn metrics_endpoint_counts_the_calls_made() {
    let app = TestApp::start().await;
    let addr = app.metrics_addr;
    for i in 0..3 {
        app.admin(&format!("admin-{i}")).await;
    }
    expect_code(
        app.directory()
            .await
            .deactivate_user(system(
                CAMPAIGN,
                pb::DeactivateUserRequest {
                    user_id: "ghost".into(),
                },
            ))
            .await,
        Code::NotFound,
    );

    // A stream that fails after its first batch is counted with its final status.
    app.conversation("c1", &[]).await;
    use pb::bulk_assign_request::Payload;
    let messages = vec![
        pb::BulkAssignRequest {
            payload: Some(Payload::Options(pb::BulkAssignOptions {
                assignee_ids: vec!["admin-0".into()],
                ..Default::default()
            })),
        },
        pb::BulkAssignRequest {
            payload: Some(Payload::Conversations(pb::ConversationBatch {
                conversation_ids: vec!["c1".into()],
            })),
        },
        pb::BulkAssignRequest {
            payload: Some(Payload::Conversations(pb::ConversationBatch {
                conversation_ids: (0..5_001).map(|i| format!("x{i}")).collect(),
            })),
        },
    ];
    let mut stream = app
        .assignments()
        .await
        .bulk_assign(as_actor("admin-0", tokio_stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    let mut failed = None;
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(status) => {
                failed = Some(status.code());
                break;
            }
        }
    }
    assert_eq!(failed, Some(Code::InvalidArgument));

    let metric = |service: &str, method: &str, code: &str| {
        format!(
            r#"grpc_server_handled_total{{service="assignment.v1.{service}",method="{method}",code="{code}"}}"#
        )
    };
    let wanted = [
        (metric("DirectoryService", "UpsertUser", "Ok"), 3.0),
        (
            metric("DirectoryService", "DeactivateUser", "NotFound"),
            1.0,
        ),
        (
            metric("AssignmentService", "BulkAssign", "InvalidArgument"),
            1.0,
        ),
    ];
    // A call is recorded when its response body ends, a moment after the client has its answer.
    let mut body = String::new();
    for _ in 0..50 {
        body = scrape(addr).await;
        if wanted
            .iter()
            .all(|(needle, at_least)| count(&body, needle) >= *at_least)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (needle, at_least) in &wanted {
        assert!(
            count(&body, needle) >= *at_least,
            "{needle} below {at_least} in:\n{body}"
        );
    }
    assert!(
        body.contains("grpc_server_handling_seconds_bucket"),
        "latency histograms"
    );
}

/// The value of the first sample line starting with `needle`.
pub fn count(body: &str, needle: &str) -> f64 {
    body.lines()
        .find(|line| line.starts_with(needle))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test]
async fn an_open_bulk_stream_holds_its_slot_until_it_ends() {
    let app = TestApp::start_configured(&["--max-concurrent-calls", "1"]).await;
    app.admin("admin").await;
    app.conversation("c1", &[]).await;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(pb::BulkAssignRequest {
        payload: Some(pb::bulk_assign_request::Payload::Options(
            pb::BulkAssignOptions {
                assignee_ids: vec!["admin".into()],
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut client = app.assignments().await;
    let mut stream = client
        .bulk_assign(as_actor(
            "admin",
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    let get = || pb::GetConversationRequest {
        conversation_id: "c1".into(),
    };
    expect_code(
        app.assignments()
            .await
            .get_conversation(as_actor("admin", get()))
            .await,
        Code::ResourceExhausted,
    );
    drop(tx);
    while stream.message().await.unwrap().is_some() {}
    drop(stream);
    let mut freed = false;
    for _ in 0..50 {
        if app
            .assignments()
            .await
            .get_conversation(as_actor("admin", get()))
            .await
            .is_ok()
        {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the slot is released when the stream ends");
}
