//! Guessing secrets is cut off, even when the guesses arrive all at once: a user's one-time codes
//! (password reset, login two-factor) allow five wrong tries per window however many are in flight,
//! and wrong admin tokens are limited per client address.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::nats::NatsCluster;
use crate::support::{ADMIN_TOKEN, PASSWORD, TestServer, http_client, status_and_json};

/// Sends `body` to `path` `count` times at once; returns how many got each status.
async fn at_once(server: &TestServer, path: &str, body: Value, count: usize) -> Vec<StatusCode> {
    let requests: Vec<_> = (0..count)
        .map(|_| {
            let (request, body) = (server.http.post(server.endpoint(path)), body.clone());
            tokio::spawn(async move { request.json(&body).send().await.unwrap().status() })
        })
        .collect();
    let mut statuses = Vec::with_capacity(count);
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    statuses
}

fn count(statuses: &[StatusCode], wanted: StatusCode) -> usize {
    statuses.iter().filter(|status| **status == wanted).count()
}

#[tokio::test]
async fn fifty_concurrent_wrong_reset_codes_get_five_tries() {
    fifty_wrong_reset_codes(&TestServer::start().await).await;
}

/// In a cluster the user is read from NATS between the limit's check and the code's: the window in
/// which unlimited guesses slipped through when the check came before the count.
#[tokio::test]
async fn fifty_concurrent_wrong_reset_codes_get_five_tries_in_a_cluster() {
    let nats = NatsCluster::start().await;
    fifty_wrong_reset_codes(&crate::cluster::node(&nats).await).await;
}

async fn fifty_wrong_reset_codes(server: &TestServer) {
    assert_eq!(server.create_user("guessed", "t").await.0, StatusCode::OK);
    let (status, issued) = server
        .post(
            "/create_totp",
            &json!({"admin_token": ADMIN_TOKEN, "username": "guessed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let right = issued["totp"].as_str().unwrap().to_owned();
    let wrong = if right == "000000" { "111111" } else { "000000" };
    let reset = |code: &str| json!({"username": "guessed", "password": "brand new pw 9", "totp": code});

    let statuses = at_once(server, "/password_reset", reset(wrong), 50).await;
    assert_eq!(count(&statuses, StatusCode::UNAUTHORIZED), 5, "{statuses:?}");
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        45,
        "{statuses:?}"
    );
    server.wait_for_log("too many wrong attempts", 1).await;
    // Cut off: the right code is refused too, and the password is unchanged.
    assert_eq!(
        server.post("/password_reset", &reset(&right)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let login = json!({"username": "guessed", "password": PASSWORD});
    assert_eq!(server.post("/login", &login).await.0, StatusCode::OK);
    // Made-up names are no guesses at a real user's code: they never count against it.
    assert_eq!(server.create_user("other", "t").await.0, StatusCode::OK);
    let ghost = json!({"username": "nobody", "password": "brand new pw 9", "totp": "123456"});
    for _ in 0..10 {
        assert_eq!(
            server.post("/password_reset", &ghost).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (_, issued) = server
        .post(
            "/create_totp",
            &json!({"admin_token": ADMIN_TOKEN, "username": "other"}),
        )
        .await;
    let other = json!({"username": "other", "password": "brand new pw 9", "totp": issued["totp"]});
    assert_eq!(server.post("/password_reset", &other).await.0, StatusCode::OK);
}

#[tokio::test]
async fn fifty_concurrent_wrong_login_codes_get_five_tries() {
    let server = TestServer::start().await;
    let (status, _) = server
        .create_user_with(json!({"username": "tfa", "tenant_name": "t", "two_factor": true}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // Each login checks the password (argon2) before the code: the codes are judged while many
    // are in flight. A 7-digit code is never right.
    let login = json!({"username": "tfa", "password": PASSWORD, "totp": "0000000"});
    let statuses = at_once(&server, "/login", login, 50).await;
    assert_eq!(count(&statuses, StatusCode::UNAUTHORIZED), 5, "{statuses:?}");
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        45,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn wrong_admin_tokens_are_cut_off_per_client_address() {
    let server = TestServer::start_with(&["--admin_failures", "10"]).await;
    let list = |token: &str| json!({"admin_token": token});
    let statuses = at_once(&server, "/list_users", list("a guess"), 10).await;
    assert_eq!(count(&statuses, StatusCode::UNAUTHORIZED), 10, "{statuses:?}");
    // The eleventh wrong token, and then the right one, in the body or the console's header.
    let (status, body) = server.post("/list_users", &list("a guess")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"].as_str().unwrap().contains("admin tokens"), "{body}");
    assert_eq!(
        server.post("/list_users", &list(ADMIN_TOKEN)).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "right or wrong, a cut-off address learns nothing"
    );
    let header = server
        .http
        .get(server.endpoint("/admin/guests"))
        .header("x-admin-token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(header.status(), StatusCode::TOO_MANY_REQUESTS);
    server.wait_for_log("too many wrong attempts", 1).await;

    // Another address (127.0.0.2 is loopback too) is not affected.
    let elsewhere = http_client()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let response = elsewhere
        .post(server.endpoint("/list_users"))
        .json(&list(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    let (status, users) = status_and_json(response).await;
    assert_eq!(status, StatusCode::OK, "{users}");
}

#[tokio::test]
async fn right_admin_tokens_never_use_up_the_allowance() {
    let server = TestServer::start_with(&["--admin_failures", "3"]).await;
    // Many right tokens, at once and one after another, interleaved with two wrong ones.
    let statuses = at_once(&server, "/list_users", json!({"admin_token": ADMIN_TOKEN}), 40).await;
    assert_eq!(count(&statuses, StatusCode::OK), 40, "{statuses:?}");
    for _ in 0..2 {
        assert_eq!(
            server.post("/list_users", &json!({"admin_token": "no"})).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    for _ in 0..20 {
        assert_eq!(
            server
                .post("/list_users", &json!({"admin_token": ADMIN_TOKEN}))
                .await
                .0,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn login_codes_cut_off_after_five_wrong_ones_until_the_30_second_window_ends() {
    let server = TestServer::start().await;
    let fields = json!({"username": "windowed", "tenant_name": "t", "two_factor": true});
    assert_eq!(server.create_user_with(fields).await.0, StatusCode::OK);
    let (_, qr) = server
        .post(
            "/create_qr",
            &json!({"admin_token": ADMIN_TOKEN, "username": "windowed", "issuer": "Acme"}),
        )
        .await;
    let url = crate::identity::scan_qr(qr["qr"].as_str().unwrap());
    let login = |code: String| json!({"username": "windowed", "password": PASSWORD, "totp": code});
    let first_wrong = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(
            server.post("/login", &login("0000000".into())).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let right = || login(crate::identity::code_from(&url, now()));
    assert_eq!(
        server.post("/login", &right()).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "cut off, right code or not"
    );
    // The window is 30 s from the first wrong code; then the right code gets in.
    tokio::time::sleep(Duration::from_secs(31).saturating_sub(first_wrong.elapsed())).await;
    let (status, body) = server.post("/login", &right()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
