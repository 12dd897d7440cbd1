//! The admin console in a real browser: Debian's Chromium, driven by npm's playwright-core from
//! `tests/node/console.mjs`. Its screenshot is kept in `target/test-artifacts/console.png`.

use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::webhooks::{Receiver, SECRET};
use crate::support::{ADMIN_TOKEN, TestServer, guests_dir, test_guest};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn an_operator_manages_users_events_and_guests_in_the_console() {
    let node_dir = repository().join("tests/node");
    assert!(
        node_dir.join("node_modules/playwright-core").exists(),
        "tests/node has no playwright-core: run scripts/test, which installs it"
    );
    assert!(
        PathBuf::from("/usr/bin/chromium").exists(),
        "Debian's chromium is not installed (scripts/test installs it)"
    );
    // A webhook the console registers is paused after 2 failures (the receiver answers 500 at
    // first), 50 ms apart.
    let server = TestServer::start_with(&["--webhook_attempts", "2", "--webhook_backoff_ms", "50"]).await;
    let receiver = Receiver::start(SECRET).await;
    receiver.answer_with(500).await;
    let guests = guests_dir(server.dir.path());
    std::fs::create_dir_all(&guests).unwrap();
    let artifacts = repository().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("console.png");
    let _ = std::fs::remove_file(&screenshot);

    let script = tokio::task::spawn_blocking({
        let (url, guest, guests, screenshot) = (
            server.endpoint(""),
            test_guest("redact"),
            guests,
            screenshot.clone(),
        );
        let hook = receiver.url();
        let receiver_base = hook.trim_end_matches("/hook").to_owned();
        move || {
            Command::new("node")
                .current_dir(node_dir)
                .arg("console.mjs")
                .args([url.as_str(), ADMIN_TOKEN])
                .args([guest, guests, screenshot])
                .args([receiver_base, SECRET.to_owned()])
                .output()
                .expect("node is installed")
        }
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&script.stdout),
        String::from_utf8_lossy(&script.stderr),
    );
    assert!(
        script.status.success(),
        "{stdout}\n{stderr}\nbroker log:\n{}",
        server.logs()
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");

    // What the console did is what the API now says.
    let (status, user) = server
        .post(
            "/get_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "console-user"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (user["revoked"].clone(), user["tenant_name"].clone()),
        (json!(true), json!("acme"))
    );
    // The webhook the console registered delivered the news event, signed with the secret typed
    // into the console (the receiver verifies with PyPI's standardwebhooks), after two refusals.
    let seen = receiver.seen();
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "{seen:#?}");
    assert_eq!(delivered[0]["type"], "news");
    assert_eq!(
        seen.len(),
        3,
        "two refused attempts, then the delivery: {seen:#?}"
    );
    // The admin token never reached a log line.
    assert!(!server.logs().contains(ADMIN_TOKEN));
}

#[tokio::test]
async fn the_admin_endpoints_need_the_token_and_the_console_can_be_turned_off() {
    let server = TestServer::start().await;
    for path in ["/admin/guests", "/admin/sse?tenant=t", "/admin/events?tenant=t"] {
        let response = server.http.get(server.endpoint(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let wrong = server
            .http
            .get(server.endpoint(path))
            .header("x-admin-token", "nope")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let insert = |token: &'static str| {
        let request = server
            .http
            .post(server.endpoint("/admin/insert"))
            .header("x-admin-token", token);
        request
            .json(&json!({"tenant_name": "t", "event": "e", "data": 1}))
            .send()
    };
    assert_eq!(insert("nope").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let inserted: Value = insert(ADMIN_TOKEN).await.unwrap().json().await.unwrap();
    assert_eq!(inserted["seq"], 1);
    // The admin's page of a tenant's history, with the token.
    let history = |query: &'static str| {
        let url = server.endpoint(&format!("/admin/events?{query}"));
        server.http.get(url).header("x-admin-token", ADMIN_TOKEN).send()
    };
    let page: Value = history("tenant=t").await.unwrap().json().await.unwrap();
    assert_eq!(
        page,
        json!({"events": [{"id": 1, "event": "e", "data": 1, "timestamp": page["events"][0]["timestamp"]}], "next": null})
    );
    assert_eq!(
        history("events=e").await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "tenant is required"
    );
    assert_eq!(
        history("tenant=t&limit=0").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let listing = server.admin_guests().await;
    assert_eq!(listing["default"]["file"], "built-in passthrough");
    assert_eq!(listing["default"]["calls"], 1, "{listing}");

    let page = server.http.get(server.endpoint("/console")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let off = TestServer::start_with(&["--console=false"]).await;
    let page = off.http.get(off.endpoint("/console")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
}
