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

/// The npm `broker-hook` (the original's React hook, on `broker-client`) in a real React app in
/// Debian's Chromium: the replayed profile renders, then each insert re-renders live.
#[tokio::test]
async fn the_npm_broker_hook_renders_replayed_and_live_events_in_react() {
    let dir = node_dir();
    assert!(
        dir.join("node_modules/broker-hook").exists() && dir.join("node_modules/react-dom").exists(),
        "tests/node has no broker-hook or react: run scripts/test, which installs them"
    );
    assert!(
        PathBuf::from("/usr/bin/chromium").exists(),
        "Debian's chromium is not installed (scripts/test installs it)"
    );
    let server = TestServer::start().await;
    let jwt = server.signup("reactor", "web").await;
    server.insert_ok(&jwt, "profile", json!({"name": "Ada"})).await;
    let (url, token) = (server.endpoint(""), jwt.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(dir)
            .args(["react-hook.mjs", &url, &token])
            .output()
            .expect("node is installed")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "{stdout}\n{stderr}\nbroker log:\n{}",
        server.logs()
    );
    assert_eq!(stdout.trim_end(), "ok");
}
