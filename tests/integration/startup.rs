//! Start-up refusals that say what to fix, printed once; refusals of calls logged once with who called
//! and why.

use std::process::Command;

use assignment_service::app;
use assignment_service::auth::hash_token;
use assignment_service::pb;
use assignment_service::pb::directory_service_client::DirectoryServiceClient;
use tonic::Code;

use crate::harness::*;

fn file(text: &str) -> String {
    let path = std::env::temp_dir().join(format!("tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn an_empty_tokens_file_is_refused_at_start_up_saying_what_to_fix() {
    let empty = file("# no callers yet\n\n");
    let err = app::build(&config(
        &fresh_schema_url().await,
        &["--tokens-file", &empty],
    ))
    .await
    .err()
    .expect("an empty tokens file does not turn authentication off");
    assert!(
        err.contains(&empty) && err.contains("names no caller") && err.contains("sha256"),
        "{err}"
    );

    // The binary prints it once, and exits with failure.
    let output = Command::new(env!("CARGO_BIN_EXE_assignment-service"))
        .args(["--tokens-file", &empty, "--listen-addr", "0.0.0.0:0"])
        .env("RUST_LOG", "info")
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("names no caller").count(),
        1,
        "printed once:\n{stderr}"
    );
    assert!(
        !stderr.contains("refusing to serve unauthenticated"),
        "not mistaken for a missing file:\n{stderr}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn refused_calls_are_logged_once_with_the_caller_and_the_reason() {
    let tokens = file(&format!("messaging user {}\n", hash_token("user-secret")));
    let addr = format!("127.0.0.1:{}", free_port());
    let (mut child, channel) = spawn_binary(&addr, &["--tokens-file", &tokens], &[]).await;
    let upsert = || {
        system(
            CAMPAIGN,
            pb::UpsertUserRequest {
                user_id: "admin".into(),
                role: pb::Role::Admin.into(),
                display_name: String::new(),
            },
        )
    };
    let mut directory = DirectoryServiceClient::new(channel);
    expect_code(directory.upsert_user(upsert()).await, Code::Unauthenticated);
    let mut with_user_token = upsert();
    with_user_token
        .metadata_mut()
        .insert("authorization", "Bearer user-secret".parse().unwrap());
    expect_code(
        directory.upsert_user(with_user_token).await,
        Code::PermissionDenied,
    );
    // Each call's line is written when its response ends, a moment after the client has it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let lines_with = |needle: &str| -> Vec<&str> {
        log.lines()
            .filter(|line| line.contains("call failed") && line.contains(needle))
            .collect()
    };
    let missing = lines_with(r#""reason":"TOKEN_MISSING""#);
    assert_eq!(missing.len(), 1, "logged once:\n{log}");
    assert!(
        missing[0].contains(r#""caller":"address 127.0.0.1""#),
        "an unauthenticated caller is known by its address:\n{log}"
    );
    let scope = lines_with(r#""reason":"SYSTEM_SCOPE_REQUIRED""#);
    assert_eq!(scope.len(), 1, "logged once:\n{log}");
    assert!(scope[0].contains(r#""caller":"messaging""#), "{log}");
}
