//! Fair service under greedy and slow callers: each caller and actor has its share of the concurrency
//! slots, and a call whose request does not arrive is ended and gives its slot back.

use std::time::Duration;

use assignment_service::auth::hash_token;
use assignment_service::pb;
use assignment_service::pb::assignment_service_client::AssignmentServiceClient;
use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::*;
use crate::production::{count, scrape};
use crate::raw_codec::RawCodec;

const GREEDY_TOKEN: &str = "greedy-secret";
const OTHER_TOKEN: &str = "sync-secret";

fn tokens_file() -> String {
    let path = std::env::temp_dir().join(format!("tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        format!(
            "greedy user {}\nsync system {}\n",
            hash_token(GREEDY_TOKEN),
            hash_token(OTHER_TOKEN)
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

fn with_token<T>(mut request: tonic::Request<T>, token: Option<&str>) -> tonic::Request<T> {
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// A BulkAssign stream that never sends its first message; it stays open until the server ends it.
fn bulk_without_first_message(
    channel: Channel,
    token: Option<&str>,
    actor: &str,
) -> JoinHandle<Result<(), Status>> {
    let (tx, rx) = mpsc::channel::<pb::BulkAssignRequest>(1);
    let request = with_token(as_actor(actor, ReceiverStream::new(rx)), token);
    tokio::spawn(async move {
        let _open = tx;
        let mut stream = AssignmentServiceClient::new(channel)
            .bulk_assign(request)
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    })
}

/// A GetInboxSettings call whose request message never comes: its headers, then nothing.
fn unary_without_body(
    channel: Channel,
    token: Option<&str>,
    actor: &str,
) -> JoinHandle<Result<(), Status>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(1);
    let request = with_token(as_actor(actor, ReceiverStream::new(rx)), token);
    tokio::spawn(async move {
        let _open = tx;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let path = PathAndQuery::from_static("/assignment.v1.AssignmentService/GetInboxSettings");
        grpc.client_streaming(request, path, RawCodec)
            .await
            .map(|_| ())
    })
}

async fn get_settings(
    channel: &Channel,
    token: Option<&str>,
    actor: &str,
) -> Result<pb::GetInboxSettingsResponse, Status> {
    AssignmentServiceClient::new(channel.clone())
        .get_inbox_settings(with_token(
            as_actor(actor, pb::GetInboxSettingsRequest {}),
            token,
        ))
        .await
        .map(|reply| reply.into_inner())
}

/// Waits until `refused` of the `silent` calls have been refused (the others hold what they could take),
/// and checks that they were refused for a full share.
async fn until_refused(silent: &mut Vec<JoinHandle<Result<(), Status>>>, refused: usize) {
    let mut ended = Vec::new();
    for _ in 0..250 {
        let (done, open): (Vec<_>, Vec<_>) = silent.drain(..).partition(|call| call.is_finished());
        *silent = open;
        ended.extend(done);
        if ended.len() >= refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ended.len(),
        refused,
        "the silent calls beyond the share are refused at once instead of holding slots"
    );
    for call in ended {
        let status = call.await.unwrap().expect_err("refused");
        assert_eq!(reason(&status), "FAIR_SHARE_EXHAUSTED", "{status:?}");
    }
}

fn share_of(status: &Status) -> (String, String) {
    let details = status.get_error_details();
    let info = details.error_info().expect("error info");
    (
        info.metadata.get("share").cloned().unwrap_or_default(),
        info.metadata.get("limit").cloned().unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_caller_holding_its_whole_share_with_silent_calls_does_not_starve_another() {
    let tokens = tokens_file();
    let app = TestApp::start_configured(&[
        "--tokens-file",
        &tokens,
        "--max-concurrent-calls",
        "8",
        "--max-calls-per-caller",
        "4",
        // The silent calls stay silent for the whole test: only the shares protect the other caller.
        "--request-read-timeout",
        "60s",
        "--stream-idle-timeout",
        "60s",
    ])
    .await;
    let channel = app.channel().await;
    let mut directory =
        assignment_service::pb::directory_service_client::DirectoryServiceClient::new(
            channel.clone(),
        );
    for (user, role) in [("admin", pb::Role::Admin), ("org", pb::Role::Organizer)] {
        directory
            .upsert_user(with_token(
                system(
                    CAMPAIGN,
                    pb::UpsertUserRequest {
                        user_id: user.into(),
                        role: role.into(),
                        display_name: String::new(),
                    },
                ),
                Some(OTHER_TOKEN),
            ))
            .await
            .unwrap();
    }

    // A user-scoped caller acting for an organizer opens as many silent calls as the server has slots.
    let greedy = Some(GREEDY_TOKEN);
    let mut silent: Vec<_> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                bulk_without_first_message(channel.clone(), greedy, "org")
            } else {
                unary_without_body(channel.clone(), greedy, "org")
            }
        })
        .collect();
    until_refused(&mut silent, 4).await;
    let refused = expect_code(
        get_settings(&channel, greedy, "admin").await,
        Code::ResourceExhausted,
    );
    assert_eq!(reason(&refused), "FAIR_SHARE_EXHAUSTED", "{refused:?}");
    assert_eq!(share_of(&refused), ("caller".into(), "4".into()));
    assert!(
        refused.message().contains("\"greedy\"") && refused.message().contains("share of 4"),
        "says whose share and its size: {refused:?}"
    );

    // Every other caller keeps being served meanwhile.
    for _ in 0..5 {
        let settings = get_settings(&channel, Some(OTHER_TOKEN), "admin")
            .await
            .expect("another caller is served while the greedy one holds its share");
        assert!(settings.settings.is_some());
    }
    assert!(
        silent.iter().all(|call| !call.is_finished()),
        "the share's calls still hold it"
    );
}

#[tokio::test]
async fn an_actor_holding_its_share_leaves_the_callers_other_actors_served() {
    let app = TestApp::start_configured(&[
        "--max-calls-per-actor",
        "2",
        "--request-read-timeout",
        "60s",
        "--stream-idle-timeout",
        "60s",
    ])
    .await;
    app.admin("admin").await;
    app.organizer("org1").await;
    let channel = app.channel().await;
    let mut silent = vec![
        bulk_without_first_message(channel.clone(), None, "org1"),
        unary_without_body(channel.clone(), None, "org1"),
        unary_without_body(channel.clone(), None, "org1"),
    ];
    until_refused(&mut silent, 1).await;
    let refused = expect_code(
        get_settings(&channel, None, "org1").await,
        Code::ResourceExhausted,
    );
    assert_eq!(reason(&refused), "FAIR_SHARE_EXHAUSTED", "{refused:?}");
    assert_eq!(share_of(&refused), ("actor".into(), "2".into()));
    assert!(
        refused.message().contains("actor \"org1\"")
            && refused.message().contains("--max-calls-per-actor"),
        "{refused:?}"
    );
    get_settings(&channel, None, "admin")
        .await
        .expect("another actor of the same caller is served");

    let shed = r#"grpc_server_shed_total{limit="actor"}"#;
    let mut body = String::new();
    for _ in 0..50 {
        body = scrape(app.metrics_addr).await;
        if count(&body, shed) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        count(&body, shed) >= 1.0,
        "shed calls are counted by limit:\n{body}"
    );
}

#[tokio::test]
async fn requests_that_do_not_arrive_in_time_are_ended_and_free_their_slots() {
    let app = TestApp::start_configured(&[
        "--max-concurrent-calls",
        "2",
        "--request-read-timeout",
        "300ms",
    ])
    .await;
    app.admin("admin").await;
    let channel = app.channel().await;
    let silent = [
        bulk_without_first_message(channel.clone(), None, "admin"),
        unary_without_body(channel.clone(), None, "admin"),
    ];
    for (call, what) in silent
        .into_iter()
        .zip(["the stream's first message", "whole request"])
    {
        let status = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("ended by the server's read timeout, not the call timeout")
            .unwrap()
            .expect_err("a request that never arrives fails");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(reason(&status), "REQUEST_TOO_SLOW");
        assert!(
            status.message().contains(what) && status.message().contains("--request-read-timeout"),
            "{status:?}"
        );
    }
    // Their slots came back: both calls of a full server are served.
    let mut served = 0;
    for _ in 0..100 {
        let (a, b) = tokio::join!(
            get_settings(&channel, None, "admin"),
            get_settings(&channel, None, "admin")
        );
        if a.is_ok() && b.is_ok() {
            served = 2;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, 2, "the slots are free again");

    // Only a stream's first message is bounded: later ones may take longer (the idle timeout applies).
    let (tx, rx) = mpsc::channel(4);
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
    let mut stream = AssignmentServiceClient::new(channel.clone())
        .bulk_assign(as_actor("admin", ReceiverStream::new(rx)))
        .await
        .expect("the first message arrived in time")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(tx);
    let mut summary = None;
    while let Some(message) = stream.message().await.expect("not cut") {
        if let Some(pb::bulk_assign_response::Payload::Summary(s)) = message.payload {
            summary = Some(s);
        }
    }
    assert!(summary.is_some(), "the stream ran to its summary");
}
