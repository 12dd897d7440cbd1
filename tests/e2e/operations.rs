//! Running Broker: `broker wit` for guest authors, `broker backup` while serving, JSON logs for
//! log collectors, and the systemd unit in `deploy/`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{ADMIN_TOKEN, JWT_SECRET, PASSWORD, TestServer};

const BROKER: &str = env!("CARGO_BIN_EXE_broker");

fn repository_file(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn broker_wit_prints_the_contract_guests_are_built_against() {
    let output = Command::new(BROKER).arg("wit").output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        printed,
        std::fs::read_to_string(repository_file("wit/broker.wit")).unwrap()
    );
    assert!(printed.contains("package broker:guest@"), "{printed}");
    // It says how to add a read rule.
    assert!(printed.contains("world reader {"), "{printed}");
    assert!(
        printed.contains("target this world instead of `validator` and implement `can-read`"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_backup_taken_during_inserts_holds_every_insert_acknowledged_before_it() {
    let server = TestServer::start().await;
    let jwt = server.signup("keeper", "t").await;
    server.insert_ok(&jwt, "profile", json!({"name": "Ada"})).await;
    // About 36 MB, so that the copy takes long enough for inserts to land while it runs.
    let bulk = "x".repeat(900 * 1024);
    for _ in 0..40 {
        server.insert_ok(&jwt, "bulk", json!(bulk)).await;
    }

    // Inserts go on, before, during and after the backup, from four writers.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (url, jwt, acknowledged, stop) = (
                server.endpoint("/insert"),
                jwt.clone(),
                acknowledged.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in 0.. {
                    if stop.is_cancelled() {
                        break;
                    }
                    let body = json!({"event": "tick", "data": i});
                    let response = http
                        .post(&url)
                        .bearer_auth(&jwt)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let answer: Value = response.json().await.unwrap();
                    acknowledged
                        .lock()
                        .unwrap()
                        .insert(answer["seq"].as_u64().unwrap());
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before: BTreeSet<u64> = acknowledged.lock().unwrap().clone();
    let at_start = before.len();
    let copy = TempDir::new().unwrap();
    let db = server.dir.path().join("db");
    let backup = tokio::task::spawn_blocking({
        let (db, to) = (db.clone(), copy.path().join("db"));
        move || {
            Command::new(BROKER)
                .arg("backup")
                .arg("--db")
                .arg(db)
                .arg("--to")
                .arg(to)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let by_the_end: BTreeSet<u64> = acknowledged.lock().unwrap().clone();
    let at_end = by_the_end.len();
    stop.cancel();
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        at_end > at_start,
        "inserts went on while the backup ran ({at_start} at its start, {at_end} at its end)"
    );

    // A second Broker on the copy has the users and every insert acknowledged before the backup.
    let restored = TestServer::start_in(Arc::new(copy), &[]).await;
    let jwt = restored.login("keeper").await;
    let mut stream = restored.subscribe_from(&jwt, Some(0)).await;
    let mut seen = BTreeSet::new();
    while let Some(event) = stream.next_within(Duration::from_secs(2)).await {
        if event.event == "profile" {
            assert_eq!(event.data, json!({"name": "Ada"}));
        }
        seen.insert(event.id);
    }
    let missing: Vec<_> = before.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, missing from it: {missing:?}"
    );
    // Inserts committed after the copy's snapshot and before the backup exited: the copy did not
    // hold the writer back while it ran (one that held the write lock lets none through).
    let newest_copied = seen.last().copied().unwrap_or(0);
    let during = by_the_end.iter().filter(|seq| **seq > newest_copied).count();
    assert!(
        during >= 3,
        "{during} inserts committed while the copy ran (newest copied {newest_copied})"
    );
    // The newest of each name, what a new subscriber and a stateful guest read first, is there too.
    let replay: Vec<String> = restored
        .subscribe(&jwt)
        .await
        .take(3)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(replay, ["profile", "bulk", "tick"]);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_request_fields_and_no_secrets() {
    let server = TestServer::start_with(&["--log_format", "json"]).await;
    let jwt = server.signup("logged", "t").await;
    server.insert_ok(&jwt, "e", json!(1)).await;
    server.wait_for_log("/insert", 1).await;
    let logs = server.logs();
    let mut requests = 0;
    for line in logs.lines() {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            object["level"].is_string() && object["timestamp"].is_string(),
            "{line}"
        );
        if object["message"] == "request" && object["path"] == "/insert" {
            assert_eq!(
                (object["status"].as_u64(), object["user"].as_str()),
                (Some(200), Some("logged"))
            );
            requests += 1;
        }
    }
    assert_eq!(requests, 1, "{logs}");
    for secret in [ADMIN_TOKEN, JWT_SECRET, PASSWORD, jwt.as_str()] {
        assert!(!logs.contains(secret), "a secret in the log:\n{logs}");
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    // A root of its own: the unit where systemd looks for it, the binary it names, and the system
    // units it depends on, so that nothing is installed on this machine.
    let root = TempDir::new().unwrap();
    let place = |path: &str| {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path
    };
    std::fs::copy(
        repository_file("deploy/broker.service"),
        place("etc/systemd/system/broker.service"),
    )
    .unwrap();
    std::fs::copy(BROKER, place("usr/local/bin/broker")).unwrap();
    let units = place("usr/lib/systemd/system");
    let copied = Command::new("cp")
        .arg("-r")
        .arg("/usr/lib/systemd/system/.")
        .arg(&units)
        .status()
        .unwrap();
    assert!(
        copied.success(),
        "copying the system's units (systemd is installed by scripts/test)"
    );
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.path().display()))
        .arg("broker.service")
        .output()
        .expect("systemd-analyze (scripts/test installs systemd)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}

/// Log lines go through a queue of 128k lines to a writer thread: a stderr that nobody reads (a
/// stuck log collector) fills the pipe and then the queue, and from then on new lines are dropped,
/// while requests are answered as before and memory stays bounded.
#[tokio::test]
async fn a_log_reader_that_stops_reading_never_stalls_requests() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new().unwrap();
    let mut child = crate::support::broker_command(dir.path(), &[]).spawn().unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    let mut line = String::new();
    while url.is_none() && log.read_line(&mut line).unwrap() > 0 {
        url = line
            .split("broker listening on ")
            .nth(1)
            .map(|rest| rest.trim().to_owned());
        line.clear();
    }
    let url = url.expect("the listening line");
    // From here on `log` is held open and never read. Each request below logs one line: 140,000
    // are more than the pipe (64 KiB) and the queue (131,072 lines) hold.
    let http = crate::support::http_client()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut answered = 0;
                for _ in 0..4_375 {
                    let response = http
                        .get(format!("{url}/"))
                        .send()
                        .await
                        .expect("an answer, not a stall");
                    answered += usize::from(response.status() == reqwest::StatusCode::OK);
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for client in clients {
        answered += client.await.unwrap();
    }
    assert_eq!(answered, 140_000);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let anon_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    // The full queue holds 131,072 lines of about 150 bytes: about 20 MiB, plus the server itself.
    assert!(anon_kib < 128 * 1024, "RssAnon {anon_kib} KiB");
    let _ = child.kill();
    let _ = child.wait();
    drop(log);
}
