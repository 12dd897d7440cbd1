//! Schemathesis (a property-based API tester, installed by tests/schemathesis/run into its own
//! virtual environment) sends generated requests to every operation in /openapi.json of a real
//! broker, authenticated ones included: no answer is a server error or outside the document.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::support::{ADMIN_TOKEN, TestServer};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/schemathesis/run")
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    // A team about to build on Broker points Schemathesis at a server that has a user with a JWT
    // and some events, hands it the admin token, and lets it try valid and invalid requests on
    // every operation the document lists.
    // One generated admin body in eight keeps a wrong token: past `--admin_failures` a minute
    // every admin call from loopback would be a 429, hiding the rest of the run's answers.
    let server = TestServer::start_with(&["--admin_failures", "100000"]).await;
    let jwt = server.signup("fixture", "fuzz").await;
    server
        .insert_ok(&jwt, "greeting", json!({"hello": "world"}))
        .await;
    // The user of the document's examples, with their password: calls about one user reach her.
    let (status, body) = server.create_user("alice", "fuzz").await;
    assert!(status.is_success(), "{body}");

    let run = tokio::process::Command::new(script())
        .args([&server.url, &jwt, ADMIN_TOKEN])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finished within 10 minutes")
        .expect("tests/schemathesis/run started");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}\nthe broker's errors:\n{}",
        output.status,
        server
            .logs()
            .lines()
            .filter(|line| line.contains("ERROR") || line.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
