//! Read rules in the tenant's guest (`can-read`): `guests/direct-messages` lets only the two parties
//! of `dm.<a>.<b>` send and read it, on streams (replay, live, resume) and in history pages, on one
//! node and on a cluster node; a rule that traps, loops or runs out of memory denies, shows as a
//! guest failure, and stalls nothing.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, install_guest, test_guest};

/// Installs `guest` as tenant `tenant`'s and waits until it serves (a JavaScript guest takes a
/// while to compile).
async fn with_guest(server: &TestServer, tenant: &str, guest: &Path) {
    install_guest(server.dir.path(), &format!("{tenant}.wasm"), guest);
    crate::js_guest::wait_long_for(server, "guest installed").await;
}

async fn page_names(server: &TestServer, jwt: &str) -> Vec<String> {
    let response = (server.http.get(server.endpoint("/events")))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let names = body["events"].as_array().unwrap().iter();
    names.map(|e| e["event"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn direct_messages_reach_their_two_parties_only() {
    direct_messages(&TestServer::start().await, &test_guest("direct_messages")).await;
}

/// The same on a cluster node: the rule sits above the event-log seam.
#[tokio::test]
async fn direct_messages_reach_their_two_parties_only_in_a_cluster() {
    let nats = crate::support::nats::NatsCluster::start().await;
    direct_messages(&crate::cluster::node(&nats).await, &test_guest("direct_messages")).await;
}

/// The same rule written in JavaScript outside the Rust workspace (`examples/guests-js`, built with
/// componentize-js against the same WIT).
#[tokio::test]
async fn direct_messages_written_in_javascript_reach_their_two_parties_only() {
    let guest = crate::js_guest::js_example("direct-messages");
    direct_messages(&TestServer::start().await, &guest).await;
}

async fn direct_messages(server: &TestServer, guest: &Path) {
    with_guest(server, "chat", guest).await;
    let ann = server.signup("ann", "chat").await;
    let bob = server.signup("bob", "chat").await;
    let eve = server.signup("eve", "chat").await;
    let mut bobs = server.subscribe(&bob).await;
    let mut eves = server.subscribe(&eve).await;

    let dm = server.insert_ok(&ann, "dm.ann.bob", json!("hi bob")).await;
    let (status, body) = server.insert(&eve, "dm.ann.bob", json!("forged")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("only its two parties"),
        "{body}"
    );
    let lobby = server.insert_ok(&eve, "lobby", json!("hello all")).await;

    // Live: bob gets both; eve the lobby only.
    let got: Vec<(String, u64)> = bobs.take(2).await.into_iter().map(|e| (e.event, e.id)).collect();
    assert_eq!(got, [("dm.ann.bob".to_owned(), dm), ("lobby".to_owned(), lobby)]);
    let first = eves.next().await;
    assert_eq!(
        (first.event.as_str(), first.id),
        ("lobby", lobby),
        "eve's stream skips the message"
    );
    // Replay on connect, and a resume from the start.
    let replayed: Vec<String> = server
        .subscribe(&ann)
        .await
        .take(2)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(replayed, ["dm.ann.bob", "lobby"]);
    let mut eve_again = server.subscribe(&eve).await;
    assert_eq!(eve_again.next().await.event, "lobby");
    eve_again.expect_quiet(Duration::from_millis(300)).await;
    let mut eve_resumed = server.subscribe_from(&eve, Some(0)).await;
    assert_eq!(eve_resumed.next().await.id, lobby);
    eve_resumed.expect_quiet(Duration::from_millis(300)).await;
    // History pages.
    assert_eq!(page_names(server, &bob).await, ["lobby", "dm.ann.bob"]);
    assert_eq!(page_names(server, &eve).await, ["lobby"]);
}

#[tokio::test]
async fn a_read_rule_that_fails_denies_and_stalls_nothing() {
    let server = TestServer::start_with(&["--guest_timeout_ms", "50", "--metrics_port", "0"]).await;
    with_guest(&server, "t", &test_guest("rules")).await;
    let jwt = server.signup("reader", "t").await;
    let (status, body) = server
        .create_user_with(json!({"username": "vip", "tenant_name": "t", "scopes": ["vip:get"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let vip = server.login("vip").await;
    let other = server.signup("bystander", "elsewhere").await;
    let mut bystanders = server.subscribe(&other).await;
    for name in [
        "rule.trap",
        "rule.loop",
        "rule.alloc",
        "rule.deny",
        "rule.vip",
        "open",
    ] {
        server.insert_ok(&jwt, name, json!(name)).await;
    }
    let failures_before = server.admin_guests().await["tenants"][0]["failures"]
        .as_u64()
        .unwrap();
    // The replay holds only what the rule let through; the failed answers denied.
    let mut stream = server.subscribe(&jwt).await;
    assert_eq!(stream.next().await.event, "open");
    stream.expect_quiet(Duration::from_millis(300)).await;
    let guests = server.admin_guests().await;
    let failures = guests["tenants"][0]["failures"].as_u64().unwrap();
    assert_eq!(failures, failures_before + 3, "trap, loop and alloc: {guests}");
    // Nothing stalled: the stream, another tenant's stream and inserts carry on.
    let later = server.insert_ok(&jwt, "after", json!(1)).await;
    assert_eq!(stream.next().await.id, later);
    let theirs = server.insert_ok(&other, "theirs", json!(1)).await;
    assert_eq!(bystanders.next().await.id, theirs);
    // The rule sees the viewer's scopes.
    let vip_names: Vec<String> = server
        .subscribe(&vip)
        .await
        .take(3)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(vip_names, ["rule.vip", "open", "after"]);
    // Each failure is in the metrics by kind, as a failing validate would be: two streams (the
    // reader's and the vip's) asked once each.
    let lines = ["trap", "timeout", "out_of_memory"]
        .map(|kind| format!("broker_guest_failures_total{{kind=\"{kind}\"}} 2"));
    crate::metrics::assert_metrics_lines(&server, &lines.each_ref().map(String::as_str)).await;
}

#[tokio::test]
async fn presence_is_shown_only_to_whom_the_read_rule_allows_it() {
    // The rules guest lets only users with a `vip:get` scope read `broker.presence`.
    let server = TestServer::start().await;
    with_guest(&server, "t", &test_guest("rules")).await;
    let reader = server.signup("reader", "t").await;
    let (status, body) = server
        .create_user_with(json!({"username": "vip", "tenant_name": "t", "scopes": ["vip:get"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let vip = server.login("vip").await;
    let presence = |jwt: &str, path: &str| server.http.get(server.endpoint(path)).bearer_auth(jwt).send();
    assert_eq!(
        presence(&reader, "/sse?presence=true").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        presence(&reader, "/presence").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // The reader streams without presence, and is seen by the vip.
    let _reader_stream = server.subscribe(&reader).await;
    let response = presence(&vip, "/sse?presence=true").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = crate::support::sse::SseStream::new(response);
    let snapshot = stream.next().await;
    assert_eq!(snapshot.event, "broker.presence");
    let answer: Value = presence(&vip, "/presence").await.unwrap().json().await.unwrap();
    assert_eq!(answer, json!({"users": ["reader", "vip"]}));
}
