//! Retention (`--retain_per_name`, `--retain_age`): old events go in the background, the newest of
//! each name never does, and a resume from below what was removed says so with a reserved
//! `broker.horizon` frame before the replay of the newest of each name; a resume above it stays exact.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::node_with;
use crate::support::nats::NatsCluster;
use crate::support::{TestServer, start_refused};

/// The tenant's stored events, oldest first, as (name, data).
async fn stored(server: &TestServer, jwt: &str) -> Vec<(String, Value)> {
    let events = server.stored_events(jwt).await;
    let named = |event: &Value| (event["event"].as_str().unwrap().to_owned(), event["data"].clone());
    events.iter().map(named).collect()
}

/// Waits until the stored events are `expected` (retention runs every second here).
async fn wait_for_stored(server: &TestServer, jwt: &str, expected: &[(&str, Value)]) {
    let expected: Vec<(String, Value)> = expected
        .iter()
        .map(|(n, d)| ((*n).to_owned(), d.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = stored(server, jwt).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stored {now:?}, waiting for {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every frame a stream opened with `resume` sends until it is quiet: (name, id, data).
async fn frames(server: &TestServer, jwt: &str, resume: Option<u64>) -> Vec<(String, u64, Value)> {
    let mut stream = server.subscribe_from(jwt, resume).await;
    let mut frames = Vec::new();
    while let Some(event) = stream.next_within(Duration::from_millis(500)).await {
        frames.push((event.event, event.id, event.data));
    }
    frames
}

const PER_NAME: [&str; 4] = ["--retain_per_name", "2", "--retention_interval", "1"];
const BY_AGE: [&str; 4] = ["--retain_age", "2s", "--retention_interval", "1"];

/// Two nodes of a cluster on `nats` with `flags`.
async fn cluster_nodes(nats: &NatsCluster, flags: &[&str]) -> (TestServer, TestServer) {
    (node_with(nats, flags).await, node_with(nats, flags).await)
}

#[tokio::test]
async fn the_newest_per_name_are_kept_and_a_resume_past_the_horizon_says_so() {
    let server = TestServer::start_with(&PER_NAME).await;
    newest_per_name_are_kept(&server, &server).await;
}

#[tokio::test]
async fn in_a_cluster_the_newest_per_name_are_kept_and_every_node_knows_the_horizon() {
    let nats = NatsCluster::start().await;
    let (a, b) = cluster_nodes(&nats, &PER_NAME).await;
    newest_per_name_are_kept(&a, &b).await;
}

/// Inserts through `writer` into a tenant of its own (sequences 1 to 6 on a fresh store) and
/// reads through `reader`.
async fn newest_per_name_are_kept(writer: &TestServer, reader: &TestServer) {
    let ann = writer.signup("ann", "kept").await;
    for n in 1..=5 {
        writer.insert_ok(&ann, "a", json!(n)).await;
    }
    let b = writer.insert_ok(&ann, "b", json!("only")).await;
    wait_for_stored(
        reader,
        &ann,
        &[("a", json!(4)), ("a", json!(5)), ("b", json!("only"))],
    )
    .await;

    // A resume from below the horizon (sequence 3, the highest removed) cannot be exact: the
    // stream says so first, then replays the newest of each name.
    let resumed = frames(reader, &ann, Some(1)).await;
    assert_eq!(
        resumed,
        [
            (
                "broker.horizon".to_owned(),
                0,
                json!({"last_event_id": 1, "horizon": 3})
            ),
            ("a".to_owned(), 5, json!(5)),
            ("b".to_owned(), b, json!("only")),
        ]
    );
    // From the horizon on, a resume is exact; a fresh stream replays as ever.
    let exact = frames(reader, &ann, Some(3)).await;
    assert_eq!(exact.iter().map(|f| f.1).collect::<Vec<_>>(), [4, 5, b]);
    let fresh = frames(reader, &ann, None).await;
    assert_eq!(fresh.iter().map(|f| f.1).collect::<Vec<_>>(), [5, b]);
    // No insert can forge the frame.
    assert_eq!(
        writer.insert(&ann, "broker.horizon", json!({})).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn events_past_the_age_go_but_never_the_newest_of_a_name() {
    let server = TestServer::start_with(&BY_AGE).await;
    old_events_go_but_never_the_newest_of_a_name(&server).await;
}

#[tokio::test]
async fn in_a_cluster_events_past_the_age_go_but_never_the_newest_of_a_name() {
    let nats = NatsCluster::start().await;
    let (a, _b) = cluster_nodes(&nats, &BY_AGE).await;
    old_events_go_but_never_the_newest_of_a_name(&a).await;
}

async fn old_events_go_but_never_the_newest_of_a_name(server: &TestServer) {
    let ann = server.signup("ann", "aged").await;
    server.insert_ok(&ann, "x", json!(1)).await;
    server.insert_ok(&ann, "x", json!(2)).await;
    server.insert_ok(&ann, "y", json!(1)).await;
    server.insert_ok(&ann, "z", json!("z1")).await;
    server.insert_ok(&ann, "z", json!("z2")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.insert_ok(&ann, "x", json!(3)).await;
    // x 1 and 2 are old and not the newest x; y 1 is old but the newest y; both z are old, and
    // z2 is the newest z.
    let kept = [("y", json!(1)), ("z", json!("z2")), ("x", json!(3))];
    wait_for_stored(server, &ann, &kept).await;
    let fresh = frames(server, &ann, None).await;
    assert_eq!(
        fresh.iter().map(|f| f.2.clone()).collect::<Vec<_>>(),
        [json!(1), json!("z2"), json!(3)]
    );
}

#[tokio::test]
async fn a_retention_age_without_a_unit_refuses_to_start() {
    let dir = tempfile::TempDir::new().unwrap();
    let (status, logs) = start_refused(dir.path(), &["--retain_age", "3w"]).await;
    assert!(!status.success());
    assert!(logs.contains("the unit is s, m, h or d"), "{logs}");
}

#[tokio::test]
async fn a_pass_over_many_batches_keeps_exactly_the_newest_of_each_name() {
    // 600 events of three names, stored before retention is on: then one pass walks them in
    // several write transactions (200 index entries each, paced), and must pick up each batch
    // where the last one stopped.
    let server = TestServer::start_with(&["--user_insert_rate", "0"]).await;
    let jwt = server.signup("prolific", "many").await;
    let names = ["a", "b", "c"];
    let mut answers = Vec::new();
    for chunk in 0..6 {
        let bodies = (chunk * 100..(chunk + 1) * 100).map(|n| json!({"event": names[n % 3], "data": n}));
        answers.extend(
            crate::support::insert_all_at_once(std::slice::from_ref(&server.url), &jwt, bodies).await,
        );
    }
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != StatusCode::OK)
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    // What must stay: per name, the two highest sequences; oldest first overall. (Read from the
    // answers: retention may already be at work.)
    let mut all: Vec<(u64, &str, Value)> = answers
        .iter()
        .enumerate()
        .map(|(n, (_, answer))| (answer["seq"].as_u64().unwrap(), names[n % 3], json!(n)))
        .collect();
    all.sort_by_key(|(seq, _, _)| *seq);
    let mut kept: Vec<(u64, &str, Value)> = Vec::new();
    for name in names {
        let of_name: Vec<_> = all.iter().filter(|(_, n, _)| *n == name).cloned().collect();
        kept.extend(of_name[of_name.len() - 2..].iter().cloned());
    }
    kept.sort_by_key(|(seq, _, _)| *seq);
    let expected: Vec<(&str, Value)> = kept.into_iter().map(|(_, name, data)| (name, data)).collect();
    let dir = server.dir.clone();
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");
    let flags = ["--retain_per_name", "2", "--retention_interval", "1"];
    let server = TestServer::start_in(dir, &flags).await;
    wait_for_stored(&server, &jwt, &expected).await;
    // All in the first pass, not a batch per pass (the pass logs once it has looked at every
    // batch, after the last removal).
    server
        .wait_for_log("retention removed old events removed=594", 1)
        .await;
}
