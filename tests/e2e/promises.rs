//! README promises that had no test of their own: Basic auth on `/sse`, an email-only update that
//! ends nothing, masked secrets in `list_users`, `BROKER_*` variables and their precedence, SIGINT,
//! keep-alive comments, `backup --to FILE`, a valid guest file after a refused one, and the bounds
//! on a guest's rejection message and log lines.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::support::{
    ADMIN_TOKEN, PASSWORD, SseStream, TestServer, data_dir_with, install_guest, jwt_claims, test_guest,
};

#[tokio::test]
async fn basic_credentials_open_a_stream_like_a_jwt() {
    let server = TestServer::start().await;
    let jwt = server.signup("basil", "t").await;
    let response = server
        .http
        .get(server.endpoint("/sse"))
        .basic_auth("basil", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseStream::new(response);
    let seq = server.insert_ok(&jwt, "e", json!("via basic")).await;
    let event = stream.next().await;
    assert_eq!((event.id, event.data), (seq, json!("via basic")));
    let wrong = server
        .http
        .get(server.endpoint("/sse"))
        .basic_auth("basil", Some("not it"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_email_only_update_keeps_the_jwt_and_the_stream() {
    let server = TestServer::start().await;
    let jwt = server.signup("emma", "t").await;
    let mut stream = server.subscribe(&jwt).await;
    let update = json!({"admin_token": ADMIN_TOKEN, "username": "emma", "email": "emma@gmail.com"});
    assert_eq!(server.post("/update_user", &update).await.0, StatusCode::OK);
    let seq = server.insert_ok(&jwt, "e", json!(1)).await;
    assert_eq!(stream.next().await.id, seq, "the stream and the JWT live on");
    let (_, user) = server
        .post(
            "/get_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "emma"}),
        )
        .await;
    assert_eq!(user["email"], "emma@gmail.com");
}

#[tokio::test]
async fn list_users_masks_passwords_and_codes() {
    let server = TestServer::start().await;
    let fields = json!({"username": "mask", "tenant_name": "t", "two_factor": true});
    assert_eq!(server.create_user_with(fields).await.0, StatusCode::OK);
    let (status, users) = server
        .post("/list_users", &json!({"admin_token": ADMIN_TOKEN}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let user = &users.as_array().unwrap()[0];
    assert_eq!(
        (&user["password"], &user["totp"]),
        (&json!("***"), &json!("***")),
        "{user}"
    );
    let text = users.to_string();
    assert!(!text.contains("$argon2"), "no hash in {text}");
}

#[tokio::test]
async fn broker_variables_configure_it_and_flags_win_over_them() {
    let dir = Arc::new(TempDir::new().unwrap());
    // BROKER_JWT_EXPIRY alone sets the lifetime; BROKER_ADMIN_TOKEN is overridden by the flag the
    // test server passes.
    let env = [
        ("BROKER_JWT_EXPIRY", "77"),
        ("BROKER_ADMIN_TOKEN", "from the environment"),
    ];
    let server = TestServer::start_with_env(dir, &[], &env).await;
    let jwt = server.signup("envy", "t").await;
    let claims = jwt_claims(&jwt);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        77
    );
    let from_env = json!({"admin_token": "from the environment"});
    assert_eq!(
        server.post("/list_users", &from_env).await.0,
        StatusCode::UNAUTHORIZED
    );
    let from_flag = json!({"admin_token": ADMIN_TOKEN});
    assert_eq!(server.post("/list_users", &from_flag).await.0, StatusCode::OK);
}

#[tokio::test]
async fn sigint_stops_broker_cleanly_like_sigterm() {
    let server = TestServer::start().await;
    let jwt = server.signup("int", "t").await;
    let mut stream = server.subscribe(&jwt).await;
    let pid = server.pid();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(stream.ends_within(Duration::from_secs(10)).await);
    server.wait_for_log("SIGINT: shutting down", 1).await;
    server.wait_for_log("stopped", 1).await;
}

#[tokio::test]
async fn keep_alive_comments_flow_on_an_idle_stream() {
    let server = TestServer::start_with(&["--keep_alive", "1"]).await;
    let jwt = server.signup("idle", "t").await;
    let response = server
        .http
        .get(server.endpoint("/sse"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut read = Vec::new();
    let comments = |read: &[u8]| read.windows(3).filter(|w| w == b":\n\n").count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while comments(&read) < 2 {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("two keep-alive comments within 10 s")
            .unwrap()
            .unwrap();
        read.extend_from_slice(&chunk);
    }
    assert_eq!(read, b":\n\n:\n\n", "only comments on an idle stream");
}

#[tokio::test]
async fn a_backup_to_a_file_is_private_and_restores() {
    let server = TestServer::start().await;
    let jwt = server.signup("filed", "t").await;
    server.insert_ok(&jwt, "note", json!("in the file")).await;
    let place = TempDir::new().unwrap();
    let file = place.path().join("broker-backup.mdb");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("backup")
        .arg("--db")
        .arg(server.dir.path().join("db"))
        .arg("--to")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    let restored = TempDir::new().unwrap();
    std::fs::create_dir(restored.path().join("db")).unwrap();
    std::fs::copy(&file, restored.path().join("db/data.mdb")).unwrap();
    let restored = TestServer::start_in(Arc::new(restored), &[]).await;
    let jwt = restored.login("filed").await;
    assert_eq!(
        restored.subscribe(&jwt).await.next().await.data,
        json!("in the file")
    );
}

#[tokio::test]
async fn a_valid_guest_file_loads_after_a_refused_one() {
    let server = TestServer::start().await;
    let broken = server.dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm not really").unwrap();
    install_guest(server.dir.path(), "shop.wasm", &broken);
    server.wait_for_log("guest refused", 1).await;
    assert_eq!(server.admin_guests().await["refused"][0]["file"], "shop.wasm");
    install_guest(server.dir.path(), "shop.wasm", &test_guest("redact"));
    server.wait_for_log("guest installed", 1).await;
    let listing = server.admin_guests().await;
    assert_eq!(listing["refused"], json!([]), "{listing}");
    assert_eq!(listing["tenants"][0]["tenant"], "shop", "{listing}");
}

#[tokio::test]
async fn a_guests_rejection_message_and_log_lines_are_bounded_and_escaped() {
    let server = TestServer::start_in(data_dir_with(&[("hostile.wasm", "hostile")]), &[]).await;
    let jwt = server.signup("h", "hostile").await;
    // "reject-long" rejects with 3 KiB of text holding a newline and an escape sequence.
    let (status, body) = server.insert(&jwt, "reject-long", json!(null)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"].as_str().unwrap();
    let shown = message.strip_prefix("rejected by guest: ").unwrap();
    assert!(
        shown.len() <= 1024 + 16,
        "at most 1 KiB of the guest's text: {} bytes",
        shown.len()
    );
    assert!(
        shown.starts_with("line one\\nline two\\u{1b}[31m"),
        "escaped: {shown:.60}"
    );
    // "log-long" logs one 2 KiB line with a newline and an escape sequence in it.
    assert_eq!(
        server.insert(&jwt, "log-long", json!(null)).await.0,
        StatusCode::OK
    );
    server.wait_for_log("guest: long", 1).await;
    let logs = server.logs();
    let line = logs.lines().find(|line| line.contains("guest: long")).unwrap();
    let logged = line.split("guest: ").nth(1).unwrap();
    assert!(
        logged.len() <= 500 + 64,
        "at most 500 bytes of the guest's line: {}",
        logged.len()
    );
    assert!(
        !logs.lines().any(|line| line.starts_with("forged line")),
        "the newline did not start a line of its own"
    );
    assert!(!line.contains('\u{1b}'), "no raw escape sequence");
}
