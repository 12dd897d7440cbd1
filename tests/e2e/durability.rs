//! What is acknowledged is on disk: restarts (even SIGKILL) keep users and events, and SIGTERM stops
//! cleanly.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;

#[tokio::test]
async fn acknowledged_inserts_and_users_survive_sigkill() {
    let server = TestServer::start().await;
    let jwt = server.signup("dora", "t").await;
    let inserts = (0..100).map(|i| {
        let (server, jwt) = (&server, &jwt);
        async move { server.insert_ok(jwt, &format!("e{}", i % 3), json!(i)).await }
    });
    let mut acknowledged = futures_util::future::join_all(inserts).await;
    acknowledged.sort_unstable();

    let dir = server.kill();
    let server = TestServer::start_in(dir, &[]).await;
    let jwt = server.login("dora").await;
    let mut stream = server.subscribe_from(&jwt, Some(0)).await;
    let replayed: Vec<u64> = stream.take(100).await.iter().map(|e| e.id).collect();
    assert_eq!(replayed, acknowledged, "every acknowledged insert is still there");

    let next = server.insert_ok(&jwt, "after-restart", json!(null)).await;
    assert_eq!(next, acknowledged[99] + 1, "sequences continue after a restart");
}

#[tokio::test]
async fn sigterm_ends_streams_and_exits_cleanly() {
    let server = TestServer::start().await;
    let jwt = server.signup("term", "t").await;
    let mut stream = server.subscribe(&jwt).await;
    server.insert_ok(&jwt, "e", json!(1)).await;
    assert_eq!(stream.next().await.data, json!(1));
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(stream.ends_within(Duration::from_secs(5)).await);
}

/// Inserts `{writer, n}` until the server stops answering; returns what was acknowledged (seq →
/// data) and the error that ended it.
async fn insert_until_stopped(url: String, jwt: String, writer: u64) -> (Vec<(u64, Value)>, reqwest::Error) {
    // A connection per request: a keep-alive connection closed by the shutdown between two
    // requests would otherwise look like a lost request.
    let http = crate::support::http_client()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut acknowledged = Vec::new();
    for n in 0.. {
        let data = json!({"writer": writer, "n": n});
        let sent = http
            .post(format!("{url}/insert"))
            .bearer_auth(&jwt)
            .json(&json!({"event": "w", "data": data}))
            .send()
            .await;
        match sent {
            Ok(response) => {
                // Never a 5xx while shutting down: a request taken is answered properly.
                assert_eq!(response.status(), StatusCode::OK, "writer {writer}, insert {n}");
                let body: Value = response.json().await.unwrap();
                acknowledged.push((body["seq"].as_u64().unwrap(), data));
            }
            Err(error) => return (acknowledged, error),
        }
    }
    unreachable!()
}

#[tokio::test]
async fn sigterm_with_inserts_in_flight_commits_every_acknowledged_insert() {
    // One user's eight writers insert as fast as they go: past `--user_insert_rate`'s burst, off here.
    let server = TestServer::start_with(&["--user_insert_rate", "0"]).await;
    let jwt = server.signup("busy", "t").await;
    let writers: Vec<_> = (0..8)
        .map(|writer| tokio::spawn(insert_until_stopped(server.url.clone(), jwt.clone(), writer)))
        .collect();
    // SIGTERM while the writers are mid-stream (they never pause).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = server.dir.clone();
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    let mut acknowledged = BTreeMap::new();
    for writer in writers {
        let (acked, ended) = writer.await.unwrap();
        // Each writer ends on a refused or closed connection, never a timeout (a hung request).
        assert!(!ended.is_timeout(), "{ended:?}");
        for (seq, data) in acked {
            assert!(
                acknowledged.insert(seq, data).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
    }
    assert!(
        acknowledged.len() >= 8,
        "inserts were in flight: {}",
        acknowledged.len()
    );

    // Every acknowledged insert is stored with its data, in a database that opens cleanly.
    let server = TestServer::start_in(dir, &[]).await;
    let jwt = server.login("busy").await;
    let newest = *acknowledged.keys().last().unwrap();
    let mut stream = server.subscribe_from(&jwt, Some(0)).await;
    let mut stored = BTreeMap::new();
    while stored.keys().last().is_none_or(|&last| last < newest) {
        let event = stream.next().await;
        stored.insert(event.id, event.data);
    }
    for (seq, data) in &acknowledged {
        assert_eq!(stored.get(seq), Some(data), "acknowledged seq {seq}");
    }
}

#[tokio::test]
async fn unknown_flags_refuse_to_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--no_such_flag")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no_such_flag"));
}

#[tokio::test]
async fn a_full_database_answers_507_for_inserts_and_user_writes_and_keeps_serving() {
    // A 1 MiB database fills after a few large records.
    let server = TestServer::start_with(&["--db_max_mb", "1"]).await;
    let jwt = server.signup("filler", "t").await;
    let big = "x".repeat(200 * 1024);
    let mut insert_status = reqwest::StatusCode::OK;
    for _ in 0..20 {
        insert_status = server.insert(&jwt, "big", json!(big)).await.0;
        if insert_status != reqwest::StatusCode::OK {
            break;
        }
    }
    assert_eq!(insert_status, reqwest::StatusCode::INSUFFICIENT_STORAGE);

    let (status, body) = server
        .create_user_with(json!({"username": "late", "tenant_name": "t", "data": big}))
        .await;
    assert_eq!(status, reqwest::StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body, json!({"error": "the database is full"}));
    // Reads still work: the stream replays what is stored.
    let mut stream = server.subscribe(&jwt).await;
    assert_eq!(stream.next().await.event, "big");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_share_commits() {
    // One user inserting as fast as it can: `--user_insert_rate` off.
    let server = TestServer::start_with(&["--metrics_port", "0", "--user_insert_rate", "0"]).await;
    let metrics = format!("http://{}/metrics", crate::metrics::metrics_address(&server));
    let jwt = server.signup("grouped", "t").await;
    let urls = [server.endpoint("")];
    let bodies = (0..1500).map(|n| json!({"event": "e", "data": n}));
    for (status, body) in crate::support::insert_all_at_once(&urls, &jwt, bodies).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let scrape = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    let sample = |name: &str| -> f64 {
        scrape
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} in {scrape}"))
            .parse()
            .unwrap()
    };
    let commits = sample("broker_commit_batch_size_count");
    let inserts = sample("broker_commit_batch_size_sum");
    assert!(inserts >= 1500.0, "{scrape}");
    // Some commits carried several inserts (fewer commits than inserts) ...
    assert!(
        commits < inserts,
        "{commits} commits for {inserts} inserts: no grouping"
    );
    // ... and none more than 512: every commit is in the bucket up to 512. (Over HTTP on this
    // machine commits stay well under it; the writer's unit test fills one to the bound.)
    assert_eq!(
        sample("broker_commit_batch_size_bucket{le=\"512.0\"}"),
        commits,
        "{scrape}"
    );
}
