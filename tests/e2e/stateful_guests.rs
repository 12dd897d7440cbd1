//! Guests that read state: `state.latest` gives a guest its tenant's newest event of a name, and a
//! read holds at commit, so nothing is accepted on a stale read (the `versioned` example guest).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, data_dir_with, insert_all_at_once};

#[tokio::test]
async fn of_twenty_clients_sending_the_same_next_version_exactly_one_wins() {
    let server = TestServer::start_in(data_dir_with(&[("forms.wasm", "versioned")]), &[]).await;
    let jwt = server.signup("editor", "forms").await;
    server
        .insert_ok(&jwt, "doc", json!({"version": 1, "title": "draft"}))
        .await;

    // Twenty clients send version 2 at once.
    let urls = [server.endpoint("")];
    let bodies =
        (0..20).map(|i| json!({"event": "doc", "data": {"version": 2, "title": format!("edit {i}")}}));
    let mut won = Vec::new();
    for (status, body) in insert_all_at_once(&urls, &jwt, bodies).await {
        match status {
            StatusCode::OK => won.push(body),
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT => {
                assert!(body["error"].is_string(), "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one version 2 is accepted: {won:?}");

    // A loser reads the news and retries with the next version.
    let (status, body) = server.insert(&jwt, "doc", json!({"version": 2})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"],
        "rejected by guest: expected version 3 for `doc`, got 2"
    );
    server
        .insert_ok(&jwt, "doc", json!({"version": 3, "title": "retried"}))
        .await;

    // The log holds versions 1, 2, 3 of doc in order, and nothing else.
    let mut stream = server.subscribe_from(&jwt, Some(0)).await;
    let versions: Vec<Value> = stream
        .take(3)
        .await
        .into_iter()
        .map(|e| e.data["version"].clone())
        .collect();
    assert_eq!(versions, [json!(1), json!(2), json!(3)]);
    stream.expect_quiet(std::time::Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_versioned_guest_says_what_it_expected_and_reads_only_its_own_tenant() {
    let dir = data_dir_with(&[("default.wasm", "versioned")]);
    let server = TestServer::start_in(dir, &[]).await;
    let ann = server.signup("ann", "tenant-a").await;
    let bob = server.signup("bob", "tenant-b").await;

    let (status, body) = server.insert(&ann, "doc", json!({"version": 2})).await;
    assert_eq!(
        (status, &body["error"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("rejected by guest: expected version 1 for `doc`, got 2")
        )
    );
    let (status, body) = server.insert(&ann, "doc", json!("not an object")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("integer `version`"),
        "{body}"
    );

    server.insert_ok(&ann, "doc", json!({"version": 1})).await;
    server.insert_ok(&ann, "doc", json!({"version": 2})).await;
    // Another tenant's "doc" is a different document: its first version is 1 again.
    server.insert_ok(&bob, "doc", json!({"version": 1})).await;
    let (status, _) = server.insert(&bob, "doc", json!({"version": 3})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_guest_built_against_wit_0_1_0_loads_and_runs_unchanged() {
    let server = TestServer::start_in(data_dir_with(&[("old.wasm", "legacy")]), &[]).await;
    let jwt = server.signup("o", "old").await;
    let mut stream = server.subscribe(&jwt).await;
    server.insert_ok(&jwt, "e", json!({"n": 1})).await;
    assert_eq!(stream.next().await.data, json!({"legacy": {"n": 1}}));
    server.wait_for_log("legacy guest called", 1).await;
}

#[tokio::test]
async fn a_guest_reading_past_its_bound_fails_the_insert_and_stores_nothing() {
    let server = TestServer::start_in(data_dir_with(&[("h.wasm", "hostile")]), &[]).await;
    let jwt = server.signup("h", "h").await;
    let (status, body) = server.insert(&jwt, "read-flood", json!(1)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("latest() more than 16 times"),
        "{body}"
    );
    let seq = server.insert_ok(&jwt, "fine", json!(2)).await;
    assert_eq!(seq, 1, "the refused insert took no sequence number");

    // Four reads of a 300 KiB event are 1.2 MiB of answers, past the 1 MiB a call may read.
    let big = "b".repeat(300 * 1024);
    let seq = server.insert_ok(&jwt, "big", json!(big)).await;
    let (status, body) = server.insert(&jwt, "read-big", json!(1)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("more than 1048576 bytes through latest()"),
        "{body}"
    );
    assert_eq!(
        server.insert_ok(&jwt, "fine", json!(3)).await,
        seq + 1,
        "nothing stored"
    );
    // Four reads of a 200 KiB event (800 KiB) are within the bound.
    let small = "s".repeat(200 * 1024);
    server.insert_ok(&jwt, "big", json!(small)).await;
    assert_eq!(server.insert(&jwt, "read-big", json!(2)).await.0, StatusCode::OK);
}

/// The value of the counter `name` in a scrape of `/metrics`.
fn counter(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in {scrape}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_insert_whose_read_keeps_changing_is_judged_three_times_then_refused_409() {
    let dir = data_dir_with(&[("hostile.wasm", "hostile")]);
    judged_three_times(
        &TestServer::start_in(dir, &["--metrics_port", "0"]).await,
        "read-slowly",
        "counter",
    )
    .await;
}

#[tokio::test]
async fn in_a_cluster_too_an_insert_whose_read_keeps_changing_is_refused_409() {
    let nats = crate::support::nats::NatsCluster::start().await;
    let dir = data_dir_with(&[("hostile.wasm", "hostile")]);
    let urls = nats.urls();
    let flags = ["--nats", &urls, "--nats_replicas", "3", "--metrics_port", "0"];
    judged_three_times(&TestServer::start_in(dir, &flags).await, "read-slowly", "counter").await;
}

/// A guest that read two names: a write to the second one in flight makes its read stale too,
/// on one node and in a cluster (where reads of several names are checked against the whole
/// stream, `Nats-Expected-Last-Sequence`, which the server enforces with writes in flight).
#[tokio::test]
async fn an_insert_whose_guest_read_two_names_is_refused_409_while_the_second_keeps_changing() {
    let dir = data_dir_with(&[("hostile.wasm", "hostile")]);
    let server = TestServer::start_in(dir, &["--metrics_port", "0"]).await;
    judged_three_times(&server, "read-two-slowly", "other").await;
    let nats = crate::support::nats::NatsCluster::start().await;
    let dir = data_dir_with(&[("hostile.wasm", "hostile")]);
    let urls = nats.urls();
    let flags = ["--nats", &urls, "--metrics_port", "0"];
    judged_three_times(
        &TestServer::start_in(dir, &flags).await,
        "read-two-slowly",
        "other",
    )
    .await;
}

/// Inserts `judged` (whose guest reads `written`, then waits) while a writer changes `written`
/// every 10 ms: judged three times, then 409.
async fn judged_three_times(server: &TestServer, judged: &str, written: &str) {
    let metrics = format!("http://{}/metrics", crate::metrics::metrics_address(server));
    let jwt = server.signup("reader", "hostile").await;

    // Control: with nothing else inserted, the slow reader's read holds and it commits.
    assert_eq!(server.insert(&jwt, judged, json!(0)).await.0, StatusCode::OK);

    // A writer changes `written` every 10 ms while the reader's guest waits 100 ms on its read.
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (url, jwt, stop) = (server.endpoint("/insert"), jwt.clone(), stop.clone());
        let written = written.to_owned();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let body = json!({"event": written, "data": n});
                let sent = http.post(&url).bearer_auth(&jwt).json(&body).send().await;
                assert_eq!(sent.unwrap().status(), StatusCode::OK);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let (status, body) = server.insert(&jwt, judged, json!(1)).await;
    stop.cancel();
    writer.await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["error"],
        "the events this insert was judged on kept changing (3 tries); read them again and retry"
    );
    // Judged three times: each of the three commits found its read stale.
    let scrape = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert_eq!(
        counter(&scrape, "broker_guest_rejudgements_total"),
        3.0,
        "{scrape}"
    );
    assert_eq!(
        counter(&scrape, "broker_inserts_total{outcome=\"conflict\"}"),
        1.0,
        "{scrape}"
    );
}
