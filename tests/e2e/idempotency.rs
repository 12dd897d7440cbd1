//! `Idempotency-Key` on `/insert`: a client that retries after an ambiguous failure with the same
//! key stores one event and gets the first one's answer, on one node (LMDB) and across the nodes of
//! a cluster (JetStream), also when a guest that reads state would refuse the retry if judged again.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, data_dir_with};

async fn insert_with_key(
    server: &TestServer,
    jwt: &str,
    key: &str,
    event: &str,
    data: Value,
) -> (StatusCode, Value) {
    let response = (server.http.post(server.endpoint("/insert")))
        .bearer_auth(jwt)
        .header("Idempotency-Key", key)
        .json(&json!({"event": event, "data": data}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every stored event of the tenant, oldest first: (name, data).
async fn stored(server: &TestServer, jwt: &str) -> Vec<(String, Value)> {
    let response = (server.http.get(server.endpoint("/events")))
        .query(&[("after", "0"), ("limit", "100")])
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    let events = page["events"].as_array().unwrap();
    events
        .iter()
        .map(|event| (event["event"].as_str().unwrap().to_owned(), event["data"].clone()))
        .collect()
}

/// A retry with the same key is the first insert's answer, stored once; the key belongs to its
/// user (another user's same key is another insert); a bad key is a 400 that stores nothing.
async fn a_retry_is_stored_once(first: &TestServer, second: &TestServer) {
    let ann = first.signup("ann", "keys").await;
    let bob = first.signup("bob", "keys").await;
    let (status, original) = insert_with_key(first, &ann, "order-1", "order", json!({"n": 1})).await;
    assert_eq!(status, StatusCode::OK, "{original}");
    // The retry (the first answer was lost) may even differ; the first one stands.
    let (status, retried) = insert_with_key(second, &ann, "order-1", "order", json!({"n": 2})).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(
        retried, original,
        "the retry is answered with the first insert's id and seq"
    );
    // Another key, and the same key from another user, are new inserts.
    let (_, other) = insert_with_key(second, &ann, "order-2", "order", json!({"n": 3})).await;
    let (_, bobs) = insert_with_key(first, &bob, "order-1", "order", json!({"n": 4})).await;
    assert_ne!(other["seq"], original["seq"]);
    assert_ne!(bobs["seq"], original["seq"]);
    for bad in ["", "has space", &"k".repeat(256)] {
        let (status, body) = insert_with_key(first, &ann, bad, "order", json!({"n": 5})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("Idempotency-Key"),
            "{body}"
        );
    }
    let payloads: Vec<Value> = stored(first, &ann)
        .await
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    assert_eq!(payloads, [json!({"n": 1}), json!({"n": 3}), json!({"n": 4})]);
}

#[tokio::test]
async fn a_retried_insert_with_the_same_key_is_stored_once() {
    let server = TestServer::start().await;
    a_retry_is_stored_once(&server, &server).await;
}

#[tokio::test]
async fn in_a_cluster_a_retry_on_another_node_is_stored_once() {
    let nats = crate::support::nats::NatsCluster::start().await;
    let first = crate::cluster::node(&nats).await;
    let second = crate::cluster::node(&nats).await;
    a_retry_is_stored_once(&first, &second).await;
}

/// Racing copies of one keyed insert (a client that retried while the first was still in flight)
/// store one event between them.
async fn racing_copies_store_one(servers: &[&TestServer]) {
    let jwt = servers[0].signup("racer", "race").await;
    let copies = (0..12).map(|i| {
        let server = servers[i % servers.len()];
        let jwt = jwt.clone();
        async move { insert_with_key(server, &jwt, "same", "tick", json!(i)).await }
    });
    let answers = futures_util::future::join_all(copies).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["seq"], answers[0].1["seq"], "{answers:?}");
    }
    assert_eq!(stored(servers[0], &jwt).await.len(), 1);
}

#[tokio::test]
async fn racing_copies_of_a_keyed_insert_store_one_event() {
    let server = TestServer::start().await;
    racing_copies_store_one(&[&server]).await;
}

#[tokio::test]
async fn in_a_cluster_racing_copies_of_a_keyed_insert_store_one_event() {
    let nats = crate::support::nats::NatsCluster::start().await;
    let (first, second) = (
        crate::cluster::node(&nats).await,
        crate::cluster::node(&nats).await,
    );
    racing_copies_store_one(&[&first, &second]).await;
}

/// A guest that reads state would refuse the retry if it judged it again (version 2 is no longer
/// next once version 2 is stored): the retry is answered before the guest.
#[tokio::test]
async fn a_retry_is_not_judged_again_by_a_guest_that_reads_state() {
    let server = TestServer::start_in(data_dir_with(&[("forms.wasm", "versioned")]), &[]).await;
    let jwt = server.signup("editor", "forms").await;
    server.insert_ok(&jwt, "doc", json!({"version": 1})).await;
    let (status, first) = insert_with_key(&server, &jwt, "v2", "doc", json!({"version": 2})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, retried) = insert_with_key(&server, &jwt, "v2", "doc", json!({"version": 2})).await;
    assert_eq!((status, &retried), (StatusCode::OK, &first));
    // Without the key the same body is judged, and refused.
    let (status, body) = server.insert(&jwt, "doc", json!({"version": 2})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(stored(&server, &jwt).await.len(), 2);
}

#[tokio::test]
async fn in_a_cluster_a_retry_on_another_node_is_not_judged_again() {
    let nats = crate::support::nats::NatsCluster::start().await;
    let nodes = crate::cluster::versioned_nodes(&nats).await;
    let jwt = nodes[0].signup("editor", "forms").await;
    let (status, first) = insert_with_key(&nodes[0], &jwt, "v1", "doc", json!({"version": 1})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, retried) = insert_with_key(&nodes[1], &jwt, "v1", "doc", json!({"version": 1})).await;
    assert_eq!((status, &retried), (StatusCode::OK, &first));
    assert_eq!(stored(&nodes[1], &jwt).await.len(), 1);
}

/// Retention leaves an event sent with a key while a retry may still ask for it (the idempotency
/// window, 120 s); removed, the retry would be stored again, or in a cluster answered with a
/// sequence no longer there. A plain event beyond the newest of its name goes meanwhile.
async fn retention_keeps_a_keyed_event_within_the_window(writer: &TestServer, retrier: &TestServer) {
    let ann = writer.signup("ann", "kept-keys").await;
    let (status, original) = insert_with_key(writer, &ann, "order-1", "a", json!({"n": 1})).await;
    assert_eq!(status, StatusCode::OK, "{original}");
    writer.insert_ok(&ann, "b", json!({"n": 2})).await;
    writer.insert_ok(&ann, "b", json!({"n": 3})).await;
    writer.insert_ok(&ann, "a", json!({"n": 4})).await;
    let kept = [
        ("a".to_owned(), json!({"n": 1})),
        ("b".to_owned(), json!({"n": 3})),
        ("a".to_owned(), json!({"n": 4})),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while stored(retrier, &ann).await != kept {
        assert!(
            std::time::Instant::now() < deadline,
            "stored {:?}",
            stored(retrier, &ann).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (status, retried) = insert_with_key(retrier, &ann, "order-1", "a", json!({"n": 1})).await;
    assert_eq!((status, &retried), (StatusCode::OK, &original));
    assert_eq!(stored(retrier, &ann).await, kept, "the retry stored nothing");
}

const KEEP_ONE: [&str; 4] = ["--retain_per_name", "1", "--retention_interval", "1"];

#[tokio::test]
async fn retention_keeps_a_keyed_event_while_its_retry_may_come() {
    let server = TestServer::start_with(&KEEP_ONE).await;
    retention_keeps_a_keyed_event_within_the_window(&server, &server).await;
}

#[tokio::test]
async fn in_a_cluster_retention_keeps_a_keyed_event_while_its_retry_may_come() {
    let nats = crate::support::nats::NatsCluster::start().await;
    let (first, second) = (
        crate::cluster::node_with(&nats, &KEEP_ONE).await,
        crate::cluster::node_with(&nats, &KEEP_ONE).await,
    );
    retention_keeps_a_keyed_event_within_the_window(&first, &second).await;
}
