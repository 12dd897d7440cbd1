//! HTTP-level promises: health, unknown routes, JSON errors on bad input, body limits, CORS.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{ADMIN_TOKEN, TestServer};

#[tokio::test]
async fn health_check_answers_get_and_head() {
    let server = TestServer::start().await;
    let get = server.http.get(server.endpoint("/")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let head = server.http.head(server.endpoint("/")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_json_errors() {
    let server = TestServer::start().await;
    let (status, body) = server.post("/nope", &json!({})).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "not found"}))
    );
    let response = server.http.get(server.endpoint("/insert")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST, OPTIONS");
    for path in ["/create_qr", "/create_totp", "/password_reset"] {
        let response = server.http.get(server.endpoint(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
    let response = server.http.delete(server.endpoint("/")).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "GET, HEAD, OPTIONS");
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_reason_and_change_nothing() {
    let server = TestServer::start().await;
    let (status, body) = server.post_raw("/create_user", "{\"username\": \"a\",").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().starts_with("malformed JSON"),
        "{body}"
    );

    let (status, body) = server.post_raw("/create_user", vec![0xff, 0xfe, 0x00]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = server.post_raw("/create_user", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let wrong_type = json!({"username": 5, "password": "p", "tenant_name": "t", "admin_token": ADMIN_TOKEN});
    let (status, body) = server.post("/create_user", &wrong_type).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("username"), "{body}");

    let missing = json!({"username": "a", "password": "p", "admin_token": ADMIN_TOKEN});
    let (status, body) = server.post("/create_user", &missing).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "missing field `tenant_name`"})
        )
    );

    let (status, users) = server
        .post("/list_users", &json!({"admin_token": ADMIN_TOKEN}))
        .await;
    assert_eq!(
        (status, users),
        (StatusCode::OK, json!([])),
        "nothing was half-written"
    );
}

#[tokio::test]
async fn bodies_up_to_one_mib_are_taken_and_larger_ones_are_413() {
    const MIB: usize = 1024 * 1024;
    let server = TestServer::start().await;
    let jwt = server.signup("big", "t").await;
    let mut stream = server.subscribe(&jwt).await;
    // The body is exactly `size` bytes: {"event":"e","data":"xxx…"}.
    let body = |size: usize| {
        let frame = r#"{"event":"e","data":""}"#.len();
        format!(r#"{{"event":"e","data":"{}"}}"#, "x".repeat(size - frame))
    };
    let send = |size: usize| {
        server
            .http
            .post(server.endpoint("/insert"))
            .bearer_auth(&jwt)
            .body(body(size))
            .send()
    };
    let (status, answer) = crate::support::status_and_json(send(MIB - 1).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "1 MiB - 1 byte is taken: {answer}");
    let stored = stream.next().await;
    assert_eq!(stored.data.as_str().map(str::len), Some(MIB - 1 - 23));
    let (status, answer) = crate::support::status_and_json(send(MIB + 1).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        answer,
        json!({"error": format!("request body is larger than {MIB} bytes")})
    );
    stream.expect_quiet(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn cors_preflight_allows_json_posts_and_sse_resume_headers() {
    let server = TestServer::start_with(&["--origin", "https://app.example"]).await;
    let response = server
        .http
        .request(reqwest::Method::OPTIONS, server.endpoint("/insert"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, authorization")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://app.example");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    for header in ["authorization", "content-type", "last-event-id"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let get = server.http.get(server.endpoint("/")).send().await.unwrap();
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn requests_are_logged_without_secrets() {
    let server = TestServer::start().await;
    let jwt = server.signup("logged", "t").await;
    server.insert_ok(&jwt, "e", json!({"secret-free": true})).await;
    let (status, _) = server
        .post(
            "/revoke_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "logged"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Lines are written in order by the log thread: once the last request's is there, all are.
    server.wait_for_log("path=\"/revoke_user\"", 1).await;
    let logs = server.logs();
    assert!(logs.contains("path=\"/insert\" status=200"), "{logs}");
    assert!(logs.contains("user=\"logged\""), "{logs}");
    for secret in [
        crate::support::PASSWORD,
        ADMIN_TOKEN,
        crate::support::JWT_SECRET,
        &jwt,
        "$argon2",
    ] {
        assert!(!logs.contains(secret), "the log leaks {secret:?}:\n{logs}");
    }
}

#[tokio::test]
async fn an_idle_stream_s_connection_is_probed_by_tcp_keepalive() {
    // A stream with nothing to send never writes: only TCP keepalive finds its client gone.
    let server = TestServer::start().await;
    let jwt = server.signup("quiet", "t").await;
    let _stream = server.subscribe(&jwt).await;
    let port = server.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    // /proc/net/tcp: the server's side of the connection (local port = Broker's, established),
    // and its timer: "02" is the keepalive timer, then the clock ticks (USER_HZ) until its probe.
    // Once the connections are idle: data just sent shows its retransmit timer ("01") until acked.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let timers: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields[1].ends_with(&format!(":{port:04X}")) && fields[3] == "01")
        .map(|fields| fields[5].to_owned())
        .collect();
    assert!(
        !timers.is_empty(),
        "no established connection on port {port}:\n{table}"
    );
    for timer in &timers {
        let (kind, ticks) = timer.split_once(':').unwrap();
        assert_eq!(kind, "02", "no keepalive timer on Broker's side: {timers:?}");
        let seconds = u64::from_str_radix(ticks, 16).unwrap() / 100;
        assert!(
            seconds <= 30,
            "the first probe comes after {seconds} s: {timers:?}"
        );
    }
}
