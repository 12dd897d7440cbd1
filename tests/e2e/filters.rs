//! Each connection chooses its events: `/sse?events=room.42.*,profile` carries the newest event of
//! each matching name on connect, then matching events live, and resumes exactly; a bad filter is
//! a 400 that names the problem. The filter is in the URL, so the unchanged npm `broker-client` and
//! a WhatWG `EventSource` use it as they are.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, PASSWORD, SseStream, TestServer};

const ROOM_FILTER: &str = "room.42.*,profile";

async fn subscribe_filtered(server: &TestServer, jwt: &str, filter: &str, resume: Option<u64>) -> SseStream {
    let mut request = server
        .http
        .get(server.endpoint("/sse"))
        .query(&[("events", filter)])
        .bearer_auth(jwt);
    if let Some(id) = resume {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    SseStream::new(response)
}

/// Inserts the events the tests below read: ids 1 to 6.
async fn rooms(server: &TestServer, jwt: &str) {
    for (name, data) in [
        ("room.42.msg", json!("hello 42")),
        ("room.43.msg", json!("hello 43")),
        ("profile", json!({"name": "Ada"})),
        ("room.42.typing", json!(true)),
        ("todo", json!(["x"])),
        ("room.42.msg", json!("again 42")),
    ] {
        server.insert_ok(jwt, name, data).await;
    }
}

#[tokio::test]
async fn a_filtered_stream_replays_and_delivers_only_matching_names_and_resumes_exactly() {
    filtered_stream(&TestServer::start().await).await;
}

/// The same on a cluster node: the filter works above the event-log seam, on JetStream as on LMDB.
#[tokio::test]
async fn a_filtered_stream_works_the_same_in_a_cluster() {
    let nats = crate::support::nats::NatsCluster::start().await;
    filtered_stream(&crate::cluster::node(&nats).await).await;
}

async fn filtered_stream(server: &TestServer) {
    let jwt = server.signup("chatter", "chat").await;
    rooms(server, &jwt).await;
    let mut stream = subscribe_filtered(server, &jwt, ROOM_FILTER, None).await;
    // The newest of each matching name, oldest first.
    let replay: Vec<(String, u64)> = stream
        .take(3)
        .await
        .into_iter()
        .map(|e| (e.event, e.id))
        .collect();
    assert_eq!(
        replay,
        [
            ("profile".into(), 3),
            ("room.42.typing".into(), 4),
            ("room.42.msg".into(), 6)
        ]
    );
    // Live: other rooms and names are left out.
    server.insert_ok(&jwt, "room.43.msg", json!("not for us")).await;
    server.insert_ok(&jwt, "todo", json!([])).await;
    let seq = server.insert_ok(&jwt, "room.42.msg", json!("live")).await;
    let event = stream.next().await;
    assert_eq!((event.id, event.data), (seq, json!("live")));
    stream.expect_quiet(Duration::from_millis(200)).await;

    // A resume skips what the filter leaves out and repeats nothing.
    let mut resumed = subscribe_filtered(server, &jwt, ROOM_FILTER, Some(3)).await;
    let ids: Vec<u64> = resumed.take(3).await.iter().map(|e| e.id).collect();
    assert_eq!(ids, [4, 6, seq]);
    resumed.expect_quiet(Duration::from_millis(200)).await;
    // Without a filter, everything, as before.
    let mut everything = server.subscribe_from(&jwt, Some(0)).await;
    assert_eq!(everything.take(9).await.len(), 9);
}

#[tokio::test]
async fn bad_filters_are_400_naming_the_problem() {
    let server = TestServer::start().await;
    let jwt = server.signup("careless", "t").await;
    let too_many = vec!["a"; 65].join(",");
    let too_long = "x".repeat(257);
    let cases = [
        ("a,,b", "empty"),
        ("a,", "empty"),
        ("ro*om", "`*` may only end an item"),
        (too_many.as_str(), "at most 64 items"),
        (too_long.as_str(), "longer than 256 bytes"),
    ];
    for (filter, problem) in cases {
        let response = server
            .http
            .get(server.endpoint("/sse"))
            .query(&[("events", filter)])
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{filter}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(problem),
            "{filter}: {body}"
        );
        let admin = server
            .http
            .get(server.endpoint("/admin/sse"))
            .query(&[("tenant", "t"), ("events", filter)])
            .header("x-admin-token", ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), StatusCode::BAD_REQUEST, "admin: {filter}");
    }
}

#[tokio::test]
async fn a_filter_and_scopes_together_carry_what_both_allow() {
    let server = TestServer::start_with(&["--enforce_scopes"]).await;
    let fields = json!({"username": "scoped", "tenant_name": "chat", "scopes": ["room.42.msg:get", "profile:get", "*:post"]});
    assert_eq!(server.create_user_with(fields).await.0, StatusCode::OK);
    let jwt = server.login("scoped").await;
    rooms(&server, &jwt).await;
    // The filter asks for all of room 42; the scopes allow only its messages.
    let mut stream = subscribe_filtered(&server, &jwt, "room.42.*", Some(0)).await;
    let ids: Vec<u64> = stream.take(2).await.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 6]);
    stream.expect_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_admin_stream_takes_a_filter_too() {
    let server = TestServer::start().await;
    let jwt = server.signup("watched", "chat").await;
    rooms(&server, &jwt).await;
    let response = server
        .http
        .get(server.endpoint("/admin/sse"))
        .query(&[("tenant", "chat"), ("events", "room.43.*")])
        .header("x-admin-token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseStream::new(response);
    assert_eq!(stream.next().await.id, 2);
    stream.expect_quiet(Duration::from_millis(200)).await;
}

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/node")
}

/// Runs a Node client in tests/node; returns it and the JSON lines it prints.
fn node_client(args: &[&str]) -> (Child, mpsc::Receiver<Value>) {
    assert!(
        node_dir().join("node_modules/eventsource").exists(),
        "tests/node has no node_modules: run scripts/test, which installs them"
    );
    let mut child = Command::new("node")
        .current_dir(node_dir())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is installed");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let value: Value = serde_json::from_str(&line).unwrap();
            if value.get("open").is_none() {
                let _ = lines_tx.send(value);
            }
        }
    });
    (child, lines)
}

/// What both clients must see on `/sse?events=room.42.*,profile`: the replay, then only the
/// matching live event.
async fn check_client(server: &TestServer, jwt: &str, mut child: Child, lines: mpsc::Receiver<Value>) {
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the client printed a message")
    };
    assert_eq!(
        next(),
        json!({"event": "profile", "id": "3", "data": {"name": "Ada"}})
    );
    assert_eq!(
        next(),
        json!({"event": "room.42.msg", "id": "6", "data": "again 42"})
    );
    server.insert_ok(jwt, "room.43.msg", json!("not for us")).await;
    server.insert_ok(jwt, "todo", json!([])).await;
    server.insert_ok(jwt, "room.42.msg", json!("live")).await;
    assert_eq!(next(), json!({"event": "room.42.msg", "id": "9", "data": "live"}));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn the_npm_broker_client_and_an_eventsource_use_a_filter_in_the_url() {
    let server = TestServer::start().await;
    let jwt = server.signup("webby", "chat").await;
    for (name, data) in [
        ("room.42.msg", json!("hello 42")),
        ("room.43.msg", json!("hello 43")),
        ("profile", json!({"name": "Ada"})),
        ("todo", json!(["x"])),
        ("room.43.msg", json!("again 43")),
        ("room.42.msg", json!("again 42")),
    ] {
        server.insert_ok(&jwt, name, data).await;
    }
    let url = format!("{}?events=room.42.*,profile", server.endpoint("/sse"));
    let names = ["profile", "todo", "room.42.msg", "room.43.msg"];
    let mut args = vec!["--import", "./loader.mjs", "subscribe.mjs", &url, &jwt, "3"];
    args.extend_from_slice(&names);
    let (child, lines) = node_client(&args);
    check_client(&server, &jwt, child, lines).await;

    // The WhatWG EventSource, on the same URL: its replay is profile (3) and the newest room.42
    // message (9), then room 42 live.
    let (child, lines) = node_client(&["eventsource.mjs", &url, &jwt, "3"]);
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the EventSource printed a message")
    };
    assert_eq!(
        next(),
        json!({"event": "profile", "id": "3", "data": {"name": "Ada"}})
    );
    assert_eq!(next(), json!({"event": "room.42.msg", "id": "9", "data": "live"}));
    server.insert_ok(&jwt, "room.43.msg", json!("not for us")).await;
    server.insert_ok(&jwt, "room.42.msg", json!("live again")).await;
    assert_eq!(
        next(),
        json!({"event": "room.42.msg", "id": "11", "data": "live again"})
    );
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

/// A browser's own EventSource (Chromium's) with the filter in its URL. It cannot send an
/// Authorization header: /sse asks for Basic credentials (`WWW-Authenticate`), and the browser
/// sends the ones it was given for Broker's origin, as after its user typed them into its prompt.
#[tokio::test]
async fn a_browsers_own_eventsource_logs_in_with_basic_and_uses_a_filter() {
    let server = TestServer::start().await;
    let jwt = server.signup("browsing", "chat").await;
    server.insert_ok(&jwt, "room.1.msg", json!("first")).await;
    server.insert_ok(&jwt, "room.2.msg", json!("elsewhere")).await;
    let note = server.insert_ok(&jwt, "room.1.note", json!("pinned")).await;
    server.insert_ok(&jwt, "profile", json!({"name": "Ada"})).await;
    // Without credentials the answer asks for them.
    let response = server.http.get(server.endpoint("/sse")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Basic realm="broker", charset="UTF-8""#
    );
    // With a bearer token that is wrong, it does not: the client chose its scheme.
    let response = server
        .http
        .get(server.endpoint("/sse"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get("www-authenticate").is_none());

    let names = "room.1.msg,room.2.msg,room.1.note,profile";
    let args = [
        "browser-eventsource.mjs",
        &server.url,
        "browsing",
        PASSWORD,
        "room.1.*",
        names,
        "3",
    ];
    let (child, lines) = node_client(&args);
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(40))
            .expect("the browser printed an event")
    };
    // The replay: the newest of each room 1 name, oldest first.
    assert_eq!(next(), json!({"event": "room.1.msg", "id": "1", "data": "first"}));
    assert_eq!(
        next(),
        json!({"event": "room.1.note", "id": note.to_string(), "data": "pinned"})
    );
    server.insert_ok(&jwt, "room.2.msg", json!("not for us")).await;
    let live = server.insert_ok(&jwt, "room.1.msg", json!("live")).await;
    assert_eq!(
        next(),
        json!({"event": "room.1.msg", "id": live.to_string(), "data": "live"})
    );
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}
