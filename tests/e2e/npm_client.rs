//! The real npm `broker-client` (installed into tests/node by the test command) receives the replay
//! and live events with the right names and data.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestServer;

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/node")
}

#[tokio::test]
async fn the_npm_broker_client_receives_replayed_and_live_events() {
    let dir = node_dir();
    assert!(
        dir.join("node_modules/broker-client").exists(),
        "tests/node has no node_modules: run the README's test command, which installs them"
    );
    let server = TestServer::start().await;
    let jwt = server.signup("browser", "web").await;
    server.insert_ok(&jwt, "profile", json!({"name": "Ada"})).await;
    server.insert_ok(&jwt, "todo", json!(["write tests"])).await;

    let mut node = Command::new("node")
        .current_dir(&dir)
        .args([
            "--import",
            "./loader.mjs",
            "subscribe.mjs",
            &server.endpoint("/sse"),
            &jwt,
            "4",
            "profile",
            "todo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is installed");
    let (lines_tx, lines) = mpsc::channel::<Value>();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(serde_json::from_str(&line).unwrap());
        }
    });
    let next_message = || loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("broker-client printed a message");
        if line.get("open").is_none() {
            return line;
        }
    };

    let replayed = [next_message(), next_message()];
    assert_eq!(
        replayed[0],
        json!({"event": "profile", "id": "1", "data": {"name": "Ada"}})
    );
    assert_eq!(
        replayed[1],
        json!({"event": "todo", "id": "2", "data": ["write tests"]})
    );

    server
        .insert_ok(&jwt, "todo", json!(["write tests", "ship"]))
        .await;
    server
        .insert_ok(&jwt, "profile", json!({"name": "Ada Lovelace"}))
        .await;
    assert_eq!(
        next_message(),
        json!({"event": "todo", "id": "3", "data": ["write tests", "ship"]})
    );
    assert_eq!(
        next_message(),
        json!({"event": "profile", "id": "4", "data": {"name": "Ada Lovelace"}})
    );
    let status = tokio::task::spawn_blocking(move || node.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}
