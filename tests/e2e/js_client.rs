//! The repository's JavaScript client (`clients/js`, npm package `@broker/client`) against a real
//! Broker killed with kill -9 and started again on the same port while events flow: in Node, and in
//! Chromium with its React hooks. Every stored event reaches the client once, in order. And
//! `npm pack` makes a package that installs into an empty project.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestServer;
use crate::support::pebble::free_port;

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

/// Inserts ticks as fast as one client goes, retrying through the outage; answers the ticks
/// acknowledged. Stops once `stop` is set.
async fn insert_ticks(url_and_jwt: (String, String), stop: std::sync::Arc<AtomicBool>) -> usize {
    let (url, jwt) = url_and_jwt;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut acknowledged = 0;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let insert = http
            .post(format!("{url}/insert"))
            .bearer_auth(&jwt)
            .json(&json!({"event": "tick", "data": {"n": n}}));
        match insert.send().await {
            Ok(response) if response.status().is_success() => acknowledged += 1,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acknowledged
}

async fn survives_kill_9(mode: &str) {
    assert!(
        client_dir().join("node_modules/eventsource-parser").exists(),
        "clients/js has no node_modules: run scripts/test, which installs them"
    );
    let port = free_port().to_string();
    let server = TestServer::start_with(&["--port", &port]).await;
    let jwt = server.signup("reader", "app").await;
    server.insert_ok(&jwt, "profile", json!({"name": "Ada"})).await;

    let mut child = Command::new("node")
        .current_dir(client_dir().join("test"))
        .args(["drive.mjs", mode, &server.url, &jwt])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is installed");
    let (lines_tx, lines) = mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(serde_json::from_str(&line).expect("drive.mjs prints JSON lines"));
        }
    });
    let next = |within: u64| {
        let line = lines.recv_timeout(Duration::from_secs(within));
        line.unwrap_or_else(|_| panic!("drive.mjs said nothing within {within} s"))
    };
    assert_eq!(tokio::task::block_in_place(|| next(60)), json!({"ready": true}));

    // Ticks flow; Broker is killed mid-flow and started again on the same port and database.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(insert_ticks((server.url.clone(), jwt.clone()), stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let dir = server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = TestServer::start_in(dir, &["--port", &port]).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.insert_ok(&jwt, "profile", json!({"name": "Grace"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged > 10, "only {acknowledged} ticks went in");
    let end = server.insert_ok(&jwt, "end", json!(null)).await;

    let result = tokio::task::block_in_place(|| next(120));
    assert!(child.wait().unwrap().success(), "{result}");
    // Every stored event after the replayed profile, once each, in order: what the database holds.
    let stored: Vec<u64> = server
        .stored_events(&jwt)
        .await
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    let received: Vec<u64> = serde_json::from_value(result["ids"].clone()).unwrap();
    assert_eq!(received, stored, "{result}");
    assert_eq!(received.last(), Some(&end));
    let statuses = result["statuses"].to_string();
    assert!(
        statuses.contains("reconnecting"),
        "the kill was noticed: {statuses}"
    );
    if mode == "browser" {
        // The hooks: the newest profile, and every tick once in order.
        assert_eq!(result["profile"], "Grace", "{result}");
        let ticks: Vec<u64> = server
            .stored_events(&jwt)
            .await
            .iter()
            .filter(|e| e["event"] == "tick")
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        assert_eq!(result["ticksShown"], json!(ticks), "{result}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_client_delivers_every_event_once_across_a_kill_9() {
    survives_kill_9("node").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_browser_client_and_its_react_hooks_deliver_every_event_once_across_a_kill_9() {
    survives_kill_9("browser").await;
}

#[tokio::test]
async fn the_client_pages_history_sees_presence_and_the_horizon_with_basic_auth() {
    let server = TestServer::start_with(&["--retain_per_name", "1", "--retention_interval", "1"]).await;
    let jwt = server.signup("ann", "app").await;
    for n in 1..=4 {
        server.insert_ok(&jwt, "note", json!({"n": n})).await;
    }
    // Retention keeps the newest note (4) only.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.stored_events(&jwt).await.len() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention removed nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let output = tokio::process::Command::new("node")
        .current_dir(client_dir().join("test"))
        .args([
            "drive.mjs",
            "features",
            &server.url,
            "-",
            "ann",
            crate::support::PASSWORD,
        ])
        .output()
        .await
        .expect("node is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    // An Idempotency-Key repeated: the same insert, stored once.
    assert_eq!(result["inserted"], 5, "{result}");
    assert_eq!(result["repeated"], 5, "{result}");
    // Pages of one, newest first, through the filter, following `next` to the end.
    assert_eq!(
        result["pages"],
        json!([[[5, "other"]], [[4, "note"]]]),
        "{result}"
    );
    assert_eq!(result["badFilter"]["status"], 400, "{result}");
    assert!(
        result["badFilter"]["message"].as_str().unwrap().contains("empty"),
        "{result}"
    );
    // From id 1, below the horizon (3): the horizon, then the newest note; then who is online.
    assert_eq!(
        result["stream"]["horizon"],
        json!({"last_event_id": 1, "horizon": 3}),
        "{result}"
    );
    assert_eq!(result["stream"]["events"], json!([[4, "note"]]), "{result}");
    assert_eq!(result["stream"]["users"], json!(["ann"]), "{result}");
    assert_eq!(result["present"], json!(["ann"]), "{result}");
    assert_eq!(result["viaJwt"], json!([5]), "{result}");
}

#[tokio::test]
async fn npm_pack_makes_a_package_that_installs_into_an_empty_project() {
    let packed = tempfile::TempDir::new().unwrap();
    let output = Command::new("npm")
        .current_dir(client_dir())
        .args(["pack", "--silent", "--pack-destination"])
        .arg(packed.path())
        .output()
        .expect("npm is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tarball = packed.path().join(String::from_utf8_lossy(&output.stdout).trim());
    let project = tempfile::TempDir::new().unwrap();
    std::fs::write(
        project.path().join("package.json"),
        r#"{"name": "app", "private": true, "type": "module"}"#,
    )
    .unwrap();
    let install = Command::new("npm")
        .current_dir(project.path())
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .arg(&tarball)
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let script = r#"import { Broker, Subscription } from "@broker/client";
const broker = new Broker({ url: "http://127.0.0.1:1/", jwt: "x" });
console.log(JSON.stringify({ url: broker.url, subscription: typeof Subscription }));"#;
    let run = Command::new("node")
        .current_dir(project.path())
        .args(["--input-type=module", "-e", script])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let answer: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        answer,
        json!({"url": "http://127.0.0.1:1", "subscription": "function"})
    );
    // Only the sources, types and README are packed: no tests, no node_modules.
    let listing = Command::new("tar").arg("-tzf").arg(&tarball).output().unwrap();
    let files = String::from_utf8_lossy(&listing.stdout);
    for file in [
        "package/src/index.js",
        "package/src/index.d.ts",
        "package/src/react.js",
        "package/README.md",
    ] {
        assert!(files.contains(file), "{file} missing from:\n{files}");
    }
    assert!(
        !files.contains("test/") && !files.contains("node_modules"),
        "{files}"
    );
}
