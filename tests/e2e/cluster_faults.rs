//! Cluster mode under faults: kill -9 of a Broker node, kill -9 of one of three NATS servers, and NATS
//! out of reach altogether. Acknowledged inserts are never lost or repeated, clients resume on
//! another node, and Broker answers 503 rather than hanging, then recovers by itself.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cluster::node;
use crate::support::TestServer;
use crate::support::nats::NatsCluster;

/// Ids of the inserts that were acknowledged.
type Acknowledged = Arc<Mutex<BTreeSet<u64>>>;

/// Inserts through `urls` in turn until `stop`, recording each acknowledged id. A node that fails
/// (killed, or 503 while NATS elects a leader) is simply tried again later, as a client would.
async fn insert_until(urls: Vec<String>, jwt: String, stop: CancellationToken, acknowledged: Acknowledged) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut i = 0usize;
    while !stop.is_cancelled() {
        i += 1;
        let url = &urls[i % urls.len()];
        let sent = http
            .post(format!("{url}/insert"))
            .bearer_auth(&jwt)
            .json(&json!({"event": "tick", "data": i}))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == StatusCode::OK => {
                let body: serde_json::Value = response.json().await.unwrap();
                acknowledged.lock().unwrap().insert(body["seq"].as_u64().unwrap());
            }
            Ok(response) => {
                let status = response.status();
                assert_eq!(
                    status,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "only 503 may refuse an insert"
                );
                assert!(
                    response.headers().contains_key("retry-after"),
                    "a 503 says when to retry"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The node was killed mid-request: the insert may or may not have been stored.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Starts four `insert_until` writers on `urls`.
fn start_writers(
    urls: &[String],
    jwt: &str,
    stop: &CancellationToken,
    acknowledged: &Acknowledged,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            tokio::spawn(insert_until(
                urls.to_vec(),
                jwt.to_owned(),
                stop.clone(),
                acknowledged.clone(),
            ))
        })
        .collect()
}

/// Reads the whole tenant log through `server` from the start, as a fresh client would.
async fn whole_log(server: &TestServer, jwt: &str, at_least: usize) -> Vec<u64> {
    let mut stream = server.subscribe_from(jwt, Some(0)).await;
    let mut ids = Vec::new();
    while ids.len() < at_least {
        ids.push(stream.next().await.id);
    }
    stream.expect_quiet(Duration::from_millis(500)).await;
    ids
}

#[tokio::test]
async fn a_killed_node_s_clients_resume_on_another_node_losing_and_repeating_nothing() {
    let nats = NatsCluster::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let jwt = a.signup("steady", "t").await;
    let (stop, acknowledged) = (CancellationToken::new(), Acknowledged::default());
    let writers = start_writers(&[a.endpoint(""), b.endpoint("")], &jwt, &stop, &acknowledged);

    // A client on node a from the first event on, until a is killed under it.
    let mut received = Vec::new();
    let mut stream = a.subscribe_from(&jwt, Some(0)).await;
    while received.len() < 30 {
        received.push(stream.next().await.id);
    }
    let b_url = b.endpoint("");
    a.kill();
    while let Some(event) = stream.next_within(Duration::from_secs(5)).await {
        received.push(event.id);
    }
    // It reconnects to b with the last id it saw, and reads on while inserts continue.
    let mut resumed = b.subscribe_from(&jwt, received.last().copied()).await;
    for _ in 0..30 {
        received.push(resumed.next().await.id);
    }
    stop.cancel();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let newest = *acknowledged.last().unwrap();
    while received.last().is_some_and(|&last| last < newest) {
        received.push(resumed.next().await.id);
    }

    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "no repeat, in order: {received:?}"
    );
    let missing: Vec<_> = acknowledged.iter().filter(|id| !received.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    // What the client saw is exactly the log: no gap either.
    let log = whole_log(&b, &jwt, received.len()).await;
    assert_eq!(log, received, "via {b_url}");
}

#[tokio::test]
async fn inserts_go_on_when_one_of_three_nats_servers_is_killed_and_it_rejoins() {
    let mut nats = NatsCluster::start().await;
    let a = node(&nats).await;
    let jwt = a.signup("survivor", "t").await;
    let (stop, acknowledged) = (CancellationToken::new(), Acknowledged::default());
    let writers = start_writers(&[a.endpoint("")], &jwt, &stop, &acknowledged);
    let count = || acknowledged.lock().unwrap().len();
    wait_until("inserts before the kill", || count() >= 50).await;

    // The events stream's leader: JetStream must elect another before inserts go on.
    let leader = nats.stream_leader("BROKER_EVENTS").await;
    nats.kill(leader);
    let before = count();
    wait_until("inserts after the kill", || count() >= before + 100).await;
    nats.restart(leader).await;
    let rejoined = count();
    wait_until("inserts after the rejoin", || count() >= rejoined + 50).await;
    stop.cancel();
    for writer in writers {
        writer.await.unwrap();
    }

    let acknowledged: Vec<u64> = acknowledged.lock().unwrap().iter().copied().collect();
    let log = whole_log(&a, &jwt, acknowledged.len()).await;
    let stored: BTreeSet<u64> = log.iter().copied().collect();
    assert_eq!(stored.len(), log.len(), "no event stored twice");
    let lost: Vec<_> = acknowledged.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged, then missing: {lost:?}");
}

#[tokio::test]
async fn without_nats_broker_answers_503_in_bounded_time_and_recovers_by_itself() {
    let mut nats = NatsCluster::start().await;
    let a = node(&nats).await;
    let jwt = a.signup("patient", "t").await;
    a.insert_ok(&jwt, "before", json!(1)).await;
    for i in 0..3 {
        nats.kill(i);
    }

    let started = tokio::time::Instant::now();
    let request = a
        .http
        .post(a.endpoint("/insert"))
        .bearer_auth(&jwt)
        .json(&json!({"event": "e", "data": 1}));
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answered in bounded time: {:?}",
        started.elapsed()
    );

    nats.restart_all().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = a.insert(&jwt, "after", json!(2)).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "Broker did not recover: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
