//! Passwords under load: argon2 runs on a bounded set of workers behind a bounded queue, and a
//! verified Basic credential is remembered only until the user changes.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{ADMIN_TOKEN, PASSWORD, TestServer};

/// One argon2 worker and room for two waiting checks.
const WORKERS: usize = 1;
const QUEUE: usize = 2;
/// Checks that may run beyond workers + queue because earlier ones finished while the burst was
/// still arriving (a hash takes tens of milliseconds; the 64 requests arrive within a few).
const SLACK: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_password_checks_gets_503_with_retry_after_instead_of_an_endless_queue() {
    // A burst of anonymous Basic requests and logins with unknown names (each costs a hash) must
    // overflow the bound, and no more checks may run than it allows.
    // The queue is the bound under test: the per-address limit (all from 127.0.0.1) is off.
    let server = TestServer::start_with(&[
        "--password_workers",
        &WORKERS.to_string(),
        "--password_queue",
        &QUEUE.to_string(),
        "--login_rate",
        "0",
    ])
    .await;
    assert_eq!(server.create_user("known", "t").await.0, StatusCode::OK);

    for via_login in [false, true] {
        let attempts = (0..64).map(|i| {
            let request = if via_login {
                let body = json!({"username": format!("nobody{i}"), "password": "guess"});
                server.http.post(server.endpoint("/login")).json(&body)
            } else {
                server
                    .http
                    .get(server.endpoint("/verify"))
                    .basic_auth(format!("nobody{i}"), Some("guess"))
            };
            async move { request.send().await.unwrap() }
        });
        let responses = futures_util::future::join_all(attempts).await;
        let (mut checked, mut refused_busy) = (0, 0);
        for response in responses {
            match response.status() {
                StatusCode::UNAUTHORIZED => checked += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    refused_busy += 1;
                    assert_eq!(response.headers()["retry-after"], "1");
                    let body: serde_json::Value = response.json().await.unwrap();
                    assert!(
                        body["error"].as_str().unwrap().contains("retry"),
                        "says why: {body}"
                    );
                }
                other => panic!("unexpected status {other}"),
            }
        }
        let what = if via_login { "/login" } else { "/verify" };
        assert!(
            checked >= 1,
            "{what}: some checks ran and were refused as wrong (401)"
        );
        assert!(
            checked <= WORKERS + QUEUE + SLACK,
            "{what}: {checked} checks ran, past workers + queue + slack"
        );
        assert_eq!(checked + refused_busy, 64, "{what}");
    }

    // Once the burst is over, a real user gets in.
    let verify = server
        .http
        .get(server.endpoint("/verify"))
        .basic_auth("known", Some(PASSWORD));
    assert_eq!(verify.send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_remembered_basic_credential_ends_the_moment_the_user_changes() {
    let server = TestServer::start().await;
    assert_eq!(server.create_user("carol", "t").await.0, StatusCode::OK);
    let verify = |password: &str| {
        server
            .http
            .get(server.endpoint("/verify"))
            .basic_auth("carol", Some(password))
            .send()
    };
    // Verified once by argon2, then served from memory.
    assert_eq!(verify(PASSWORD).await.unwrap().status(), StatusCode::OK);
    assert_eq!(verify(PASSWORD).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        verify("not the password").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "a remembered user does not accept other passwords"
    );

    let change = json!({"admin_token": ADMIN_TOKEN, "username": "carol", "password": "a new password 42"});
    assert_eq!(server.post("/update_user", &change).await.0, StatusCode::OK);
    assert_eq!(
        verify(PASSWORD).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "the old password stops working at once"
    );
    assert_eq!(
        verify("a new password 42").await.unwrap().status(),
        StatusCode::OK
    );

    let revoke = json!({"admin_token": ADMIN_TOKEN, "username": "carol"});
    assert_eq!(server.post("/revoke_user", &revoke).await.0, StatusCode::OK);
    assert_eq!(
        verify("a new password 42").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "a revoke ends the remembered credential"
    );
}

#[tokio::test]
async fn empty_and_oversized_usernames_are_client_errors_not_server_errors() {
    let server = TestServer::start().await;
    let long = "x".repeat(600);
    for username in ["", long.as_str()] {
        let verify = server
            .http
            .get(server.endpoint("/verify"))
            .basic_auth(username, Some("pw"));
        assert_eq!(verify.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let (status, body) = server
            .post("/login", &json!({"username": username, "password": "pw"}))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let reset = json!({"username": username, "password": "new password 1", "totp": "123456"});
        let (status, body) = server.post("/password_reset", &reset).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // Empty username in a Basic header: `Og==` is base64 of ":".
    let raw = server
        .http
        .get(server.endpoint("/sse"))
        .header("authorization", "Basic Og==");
    assert_eq!(raw.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // The log is written by a thread of its own: wait for the last request's line before reading.
    server.wait_for_log("path=\"/sse\"", 1).await;
    assert!(
        !server.logs().contains("ERROR"),
        "client mistakes are not errors in the log"
    );
}

/// The number of argon2 jobs the server ran so far, from its metrics.
async fn argon2_jobs(metrics: &str) -> f64 {
    let scrape = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    scrape
        .lines()
        .find_map(|line| line.strip_prefix("broker_password_queue_wait_seconds_count "))
        .unwrap_or_else(|| panic!("no argon2 count in {scrape}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_remembered_basic_credential_is_checked_again_after_60_seconds() {
    let server = TestServer::start_with(&["--metrics_port", "0"]).await;
    let metrics = format!("http://{}/metrics", crate::metrics::metrics_address(&server));
    assert_eq!(server.create_user("dora", "t").await.0, StatusCode::OK);
    let verify = || {
        server
            .http
            .get(server.endpoint("/verify"))
            .basic_auth("dora", Some(PASSWORD))
            .send()
    };
    assert_eq!(verify().await.unwrap().status(), StatusCode::OK);
    let after_first = argon2_jobs(&metrics).await;
    assert_eq!(verify().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        argon2_jobs(&metrics).await,
        after_first,
        "remembered: no second hash"
    );
    tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    assert_eq!(verify().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        argon2_jobs(&metrics).await,
        after_first + 1.0,
        "forgotten after 60 s: hashed again"
    );
}
