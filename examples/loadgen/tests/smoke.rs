//! One short run of each `broker-load` scenario against the real `broker` binary: correctness
//! counts only (no lost, duplicated or out-of-order events, no errors) — never timings.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const ADMIN_TOKEN: &str = "smoke-admin-token";

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `broker` binary that `cargo test --workspace` builds beside `broker-load`.
fn broker_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_broker-load")).with_file_name("broker");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p broker` (scripts/test does)",
        path.display()
    );
    path
}

fn start_broker() -> Server {
    let dir = tempfile::TempDir::new().unwrap();
    let mut child = Command::new(broker_binary())
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--admin_token",
            ADMIN_TOKEN,
            "--ntp_servers=",
        ])
        .arg("--db")
        .arg(dir.path().join("db"))
        .arg("--guests")
        .arg(dir.path().join("guests"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.split("broker listening on ").nth(1).map(str::to_owned))
        .expect("broker started");
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server {
        child,
        url,
        _dir: dir,
    }
}

fn run_scenario(server: &Server, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_broker-load"))
        .args([
            "--url",
            &server.url,
            "--admin-token",
            ADMIN_TOKEN,
            "--seconds",
            "1",
        ])
        .args(args)
        .arg("--pid")
        .arg(server.child.id().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("the last line is JSON")
}

#[test]
fn every_scenario_runs_cleanly_against_broker() {
    let server = start_broker();

    for scenario in ["insert", "basic"] {
        let result = run_scenario(&server, &["--scenario", scenario, "--clients", "2"]);
        assert_eq!(result["errors"], 0, "{result}");
        assert!(result["ok"].as_u64().unwrap() > 0, "{result}");
    }

    let result = run_scenario(&server, &["--scenario", "login", "--clients", "2"]);
    assert_eq!(result["errors"], 0, "{result}");
    assert!(result["ok"].as_u64().unwrap() > 0, "{result}");

    let result = run_scenario(
        &server,
        &[
            "--scenario",
            "fanout",
            "--clients",
            "2",
            "--subscribers",
            "100",
            "--rate",
            "100",
        ],
    );
    assert_eq!(
        (
            result["lost"].as_u64(),
            result["duplicated"].as_u64(),
            result["out_of_order"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{result}"
    );
    assert_eq!(result["errors"], 0, "{result}");
    let inserts = result["inserts"].as_u64().unwrap();
    assert!(inserts > 0);
    assert_eq!(result["deliveries"].as_u64().unwrap(), inserts * 100, "{result}");

    let result = run_scenario(&server, &["--scenario", "connections", "--clients", "50"]);
    assert_eq!(result["all_stayed_open"], true, "{result}");
    assert!(result["rss_kib_per_connection"].is_number(), "{result}");
}
