//! A guest written in JavaScript (`examples/guests-js`, built by scripts/test with npm's
//! componentize-js) validates, transforms and rejects inserts like a Rust one.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestServer, install_guest};

fn js_guest() -> PathBuf {
    js_example("validator")
}

/// `examples/guests-js/<name>.wasm`, which scripts/test builds.
pub fn js_example(name: &str) -> PathBuf {
    let wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/guests-js/{name}.wasm"));
    assert!(
        wasm.exists(),
        "{} is missing: scripts/test builds it (npm ci && npm run build in examples/guests-js)",
        wasm.display()
    );
    wasm
}

/// Waits for `needle` in the log for as long as compiling a 12 MB guest may take on a busy machine.
pub async fn wait_long_for(server: &TestServer, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while !server.logs().contains(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_javascript_guest_accepts_transforms_and_rejects() {
    let server = TestServer::start().await;
    let jwt = server.signup("scripter", "js").await;
    install_guest(server.dir.path(), "js.wasm", &js_guest());
    wait_long_for(&server, "guest installed").await;

    let mut stream = server.subscribe(&jwt).await;
    server.insert_ok(&jwt, "shout", json!("hi")).await;
    assert_eq!(stream.next().await.data, json!("HI"), "replaced by the guest");
    server.insert_ok(&jwt, "order-1", json!({"amount": 5})).await;
    server.insert_ok(&jwt, "plain", json!([1])).await;
    assert_eq!(
        stream
            .take(2)
            .await
            .into_iter()
            .map(|e| e.data)
            .collect::<Vec<_>>(),
        [json!({"amount": 5}), json!([1])]
    );

    let (status, body) = server.insert(&jwt, "reject-me", json!(1)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("rejected by guest: rejected by JavaScript: 1")
        )
    );
    let (status, body) = server.insert(&jwt, "order-2", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("\"amount\" is missing"),
        "{body}"
    );
    stream.expect_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_guest_too_big_for_the_memory_limit_is_refused_with_the_flag_to_raise() {
    let server = TestServer::start_with(&["--guest_memory_mb", "8"]).await;
    install_guest(server.dir.path(), "js.wasm", &js_guest());
    wait_long_for(&server, "guest refused").await;
    // The operator sees the refusal and its remedy in /admin/guests, not only in the log.
    let guests = server.admin_guests().await;
    let refused = guests["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{guests}");
    assert_eq!(refused[0]["file"], "js.wasm", "{guests}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("--guest_memory_mb=8 allows: raise it"),
        "{guests}"
    );
    assert!(guests["tenants"].as_array().unwrap().is_empty(), "{guests}");
    // Tenant js keeps the pass-through: its data is stored unchanged.
    let jwt = server.signup("shopper", "js").await;
    let mut stream = server.subscribe(&jwt).await;
    assert_eq!(
        server.insert(&jwt, "order-1", json!({"amount": 1})).await.0,
        StatusCode::OK
    );
    assert_eq!(stream.next().await.data, json!({"amount": 1}));
}
