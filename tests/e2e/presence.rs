//! Presence: a stream opened with `?presence=true` gets, after its replay, the tenant's users
//! with an open stream, then their joins and leaves, counted per user across tabs and across
//! nodes; `GET /presence` answers the same set; scopes decide who sees it; a node killed with
//! kill -9 has its users leave within a bounded time.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;
use crate::support::nats::NatsCluster;
use crate::support::sse::SseStream;

const WAIT: Duration = Duration::from_secs(20);

async fn open(server: &TestServer, jwt: &str, query: &str) -> SseStream {
    let url = server.endpoint(&format!("/sse{query}"));
    let response = server.http.get(url).bearer_auth(jwt).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    SseStream::new(response)
}

async fn presence_answer(server: &TestServer, jwt: &str) -> (StatusCode, Value) {
    let response = server
        .http
        .get(server.endpoint("/presence"))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    crate::support::status_and_json(response).await
}

fn users(data: &Value) -> BTreeSet<String> {
    data["users"]
        .as_array()
        .expect("a users list")
        .iter()
        .map(|user| user.as_str().unwrap().to_owned())
        .collect()
}

/// What a presence stream has said so far: the snapshot with the joins and leaves applied.
struct Watcher {
    stream: SseStream,
    present: BTreeSet<String>,
    /// Every presence frame: (name, users).
    frames: Vec<(String, BTreeSet<String>)>,
}

impl Watcher {
    /// Reads the replay's events and the snapshot that follows them.
    async fn start(mut stream: SseStream) -> Self {
        loop {
            let frame = stream.next().await;
            if frame.event == "broker.presence" {
                let present = users(&frame.data);
                let frames = vec![(frame.event, present.clone())];
                return Self {
                    stream,
                    present,
                    frames,
                };
            }
            assert!(
                !frame.event.starts_with("broker.presence."),
                "a change before the snapshot: {frame:?}"
            );
        }
    }

    fn apply(&mut self, name: &str, data: &Value) {
        let changed = users(data);
        match name {
            "broker.presence.join" => self.present.extend(changed.iter().cloned()),
            "broker.presence.leave" => self.present.retain(|user| !changed.contains(user)),
            other => panic!("not a presence frame: {other}"),
        }
        self.frames.push((name.to_owned(), changed));
    }

    /// Reads frames until the present users are `expected`.
    async fn until(&mut self, expected: &[&str]) {
        let expected: BTreeSet<String> = expected.iter().map(|user| (*user).to_owned()).collect();
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.present != expected {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.stream.next_within(left).await else {
                panic!(
                    "presence is {:?}, not {expected:?}; frames: {:?}",
                    self.present, self.frames
                );
            };
            if frame.event.starts_with("broker.presence.") {
                self.apply(&frame.event, &frame.data);
            }
        }
    }

    /// Asserts no presence frame comes for `wait`; the server's log goes with a failure.
    async fn quiet(&mut self, wait: Duration, server: &TestServer) {
        if let Some(frame) = self.stream.next_within(wait).await {
            panic!(
                "unexpected {frame:?} (present: {:?})\n{}",
                self.present,
                server.logs()
            );
        }
    }
}

#[tokio::test]
async fn a_presence_stream_sees_who_is_online_counted_per_user_across_tabs() {
    // With why each stream ended in the log, for a failure to show.
    let dir = std::sync::Arc::new(tempfile::TempDir::new().unwrap());
    let server = TestServer::start_logging(dir, &[], "info,broker::subscribe=debug").await;
    let ann = server.signup("ann", "room").await;
    let bob = server.signup("bob", "room").await;
    let cy = server.signup("cy", "room").await;
    let olga = server.signup("olga", "elsewhere").await;
    server.insert_ok(&ann, "topic", json!({"title": "hi"})).await;
    let _olga_stream = open(&server, &olga, "").await;
    let _bob_stream = open(&server, &bob, "").await;

    // The replay first (the newest topic), then the snapshot: bob (a stream without presence
    // counts too) and ann herself; never olga, of another tenant.
    let mut stream = open(&server, &ann, "?presence=true").await;
    let replayed = stream.next().await;
    assert_eq!((replayed.event.as_str(), replayed.id), ("topic", 1));
    let mut ann_watch = Watcher::start(stream).await;
    ann_watch.until(&["ann", "bob"]).await;

    // Two tabs of cy: one join; closing one of them: nothing; closing both: one leave.
    let first_tab = open(&server, &cy, "").await;
    let second_tab = open(&server, &cy, "?events=topic").await;
    ann_watch.until(&["ann", "bob", "cy"]).await;
    drop(first_tab);
    // Longer than the 2 s grace of a leave.
    ann_watch.quiet(Duration::from_secs(3), &server).await;
    let (status, answer) = presence_answer(&server, &bob).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"users": ["ann", "bob", "cy"]}));
    drop(second_tab);
    ann_watch.until(&["ann", "bob"]).await;
    let joins_of_cy = ann_watch
        .frames
        .iter()
        .filter(|(name, users)| name.ends_with("join") && users.contains("cy"));
    assert_eq!(joins_of_cy.count(), 1, "{:?}", ann_watch.frames);

    // A revoked user's streams end at once, and it leaves.
    let revoke = json!({"admin_token": crate::support::ADMIN_TOKEN, "username": "bob"});
    assert_eq!(server.post("/revoke_user", &revoke).await.0, StatusCode::OK);
    ann_watch.until(&["ann"]).await;

    // The other tenant sees only its own.
    let (_, answer) = presence_answer(&server, &olga).await;
    assert_eq!(answer, json!({"users": ["olga"]}));
    // Events keep flowing on the presence stream, with their ids.
    let seq = server.insert_ok(&ann, "topic", json!({"title": "again"})).await;
    let frame = ann_watch.stream.next().await;
    assert_eq!((frame.event.as_str(), frame.id), ("topic", seq));
    // No client can forge a presence frame.
    let (status, _) = server
        .insert(&ann, "broker.presence.join", json!({"users": ["mallory"]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn many_users_connecting_at_once_arrive_in_a_few_coalesced_frames() {
    let server = TestServer::start().await;
    let watcher_jwt = server.signup("watcher", "crowd").await;
    let mut jwts = Vec::new();
    for n in 0..40 {
        jwts.push(server.signup(&format!("user{n:02}"), "crowd").await);
    }
    let mut watcher = Watcher::start(open(&server, &watcher_jwt, "?presence=true").await).await;
    let started = tokio::time::Instant::now();
    let streams = futures_util::future::join_all(jwts.iter().map(|jwt| open(&server, jwt, ""))).await;
    let mut expected: Vec<String> = (0..40).map(|n| format!("user{n:02}")).collect();
    expected.push("watcher".into());
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    watcher.until(&expected).await;
    // 40 users joined; changes are published at most every 250 ms, each as one frame: however
    // slowly the machine opened the streams, no more frames than windows (and fewer than users).
    let windows = started.elapsed().as_millis() / 250 + 2;
    let changes = watcher.frames.len() - 1;
    assert!(
        changes as u128 <= windows && changes < 40,
        "{changes} frames for 40 joins in {windows} windows: {:?}",
        watcher.frames
    );
    drop(streams);
    watcher.until(&["watcher"]).await;
}

#[tokio::test]
async fn presence_needs_its_scope_when_scopes_are_enforced() {
    let server = TestServer::start_with(&["--enforce_scopes"]).await;
    let plain = json!({"username": "plain", "tenant_name": "t", "scopes": ["news:get"]});
    assert_eq!(server.create_user_with(plain).await.0, StatusCode::OK);
    let allowed =
        json!({"username": "allowed", "tenant_name": "t", "scopes": ["news:get", "broker.presence:get"]});
    assert_eq!(server.create_user_with(allowed).await.0, StatusCode::OK);
    let plain = server.login("plain").await;
    let allowed = server.login("allowed").await;

    let refused = server
        .http
        .get(server.endpoint("/sse?presence=true"))
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("broker.presence:get"),
        "{body}"
    );
    assert_eq!(presence_answer(&server, &plain).await.0, StatusCode::FORBIDDEN);
    // Without presence the same user streams as before, and counts as present.
    let _plain_stream = open(&server, &plain, "").await;

    let mut watcher = Watcher::start(open(&server, &allowed, "?presence=true").await).await;
    watcher.until(&["allowed", "plain"]).await;
    let (status, answer) = presence_answer(&server, &allowed).await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"users": ["allowed", "plain"]}))
    );

    let bad = server
        .http
        .get(server.endpoint("/sse?presence=yes"))
        .bearer_auth(&allowed)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn in_a_cluster_presence_spans_nodes_and_a_killed_node_s_users_leave() {
    let nats = NatsCluster::start().await;
    let first = crate::cluster::node(&nats).await;
    let second = crate::cluster::node(&nats).await;
    let ann = first.signup("ann", "room").await;
    let bob = first.signup("bob", "room").await;
    let cy = first.signup("cy", "room").await;

    let mut watcher = Watcher::start(open(&first, &ann, "?presence=true").await).await;
    watcher.until(&["ann"]).await;
    let _bob_stream = open(&second, &bob, "").await;
    watcher.until(&["ann", "bob"]).await;
    // cy in a tab on each node: present while either is open.
    let cy_here = open(&first, &cy, "").await;
    let _cy_there = open(&second, &cy, "").await;
    watcher.until(&["ann", "bob", "cy"]).await;
    drop(cy_here);
    watcher.quiet(Duration::from_secs(4), &second).await;
    let (_, answer) = presence_answer(&second, &bob).await;
    assert_eq!(answer, json!({"users": ["ann", "bob", "cy"]}));

    // The second node dies without a word: its users leave once its record is stale (10 s),
    // read within a second, published within 250 ms, after the 2 s grace of a leave.
    let killed_at = tokio::time::Instant::now();
    second.kill();
    watcher.until(&["ann"]).await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(16), "left after {took:?}");
}
