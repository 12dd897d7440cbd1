//! Metrics: `GET /metrics` on the `--metrics_port` listener only, scraped by a real Prometheus
//! server, whose query API must then show what the test did.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::support::prometheus::Prometheus;
use crate::support::{TestServer, install_guest, test_guest};

/// How long Prometheus gets to pick up its target and scrape it (it applies targets every 5 s).
const SCRAPED: Duration = Duration::from_secs(30);

/// The metrics listener's `host:port`, from the line Broker logs at start.
pub fn metrics_address(server: &TestServer) -> String {
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|line| line.contains("metrics on http://"))
        .expect("a metrics line in the log");
    let url = line.split("metrics on http://").nth(1).unwrap();
    url.trim().trim_end_matches("/metrics").to_owned()
}

/// The metrics text `server` serves now.
pub async fn scrape(server: &TestServer) -> String {
    let address = metrics_address(server);
    let response = reqwest::get(format!("http://{address}/metrics")).await.unwrap();
    response.text().await.unwrap()
}

/// Asserts that the metrics text has each of `lines`, exactly.
pub async fn assert_metrics_lines(server: &TestServer, lines: &[&str]) {
    let scraped = scrape(server).await;
    for line in lines {
        assert!(scraped.lines().any(|l| l == *line), "{line} in:\n{scraped}");
    }
}

#[tokio::test]
async fn prometheus_scrapes_what_broker_did_and_the_public_port_has_no_metrics() {
    let dir = TempDir::new().unwrap();
    install_guest(dir.path(), "picky.wasm", &test_guest("hostile"));
    let server = TestServer::start_in(dir.into(), &["--metrics_port", "0"]).await;
    let address = metrics_address(&server);

    // Not on the public port, whatever the method.
    let public = reqwest::get(server.endpoint("/metrics")).await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);

    let jwt = server.signup("metered-user", "metered-tenant").await;
    let mut stream = server.subscribe(&jwt).await;
    for i in 0..5 {
        server.insert_ok(&jwt, "tick", json!(i)).await;
    }
    stream.take(5).await;
    let picky = server.signup("picky-user", "picky").await;
    assert_eq!(
        server.insert(&picky, "reject", json!(1)).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server.insert(&picky, "trap", json!(1)).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let prometheus = Prometheus::start(&address).await;
    let accepted = r#"broker_inserts_total{outcome="accepted"}"#;
    assert_eq!(prometheus.wait_for(accepted, 5.0, SCRAPED).await, 5.0);
    let checks = [
        (r#"broker_inserts_total{outcome="rejected_by_guest"}"#, 1.0),
        (r#"broker_inserts_total{outcome="failed"}"#, 1.0),
        (r#"broker_guest_failures_total{kind="trap"}"#, 1.0),
        (r#"broker_http_requests_total{route="/insert",class="2xx"}"#, 5.0),
        (r#"broker_http_requests_total{route="other",class="4xx"}"#, 1.0),
        ("broker_deliveries_total", 5.0),
        ("broker_open_streams", 1.0),
        ("broker_commit_seconds_count", 5.0),
        ("broker_guest_call_seconds_count", 7.0),
        // Two signups: a hash and a verification each.
        ("broker_password_queue_wait_seconds_count", 4.0),
    ];
    for (query, expected) in checks {
        assert_eq!(prometheus.query(query).await, Some(expected), "{query}");
    }

    // Labels are bounded: no tenant, user or path of a client's choosing becomes a series.
    let text = scrape(&server).await;
    for private in ["metered-user", "metered-tenant", "picky"] {
        assert!(!text.contains(private), "{private} in the metrics:\n{text}");
    }

    // Every metric the README's table names is served (each of them has a sample by now).
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = readme
        .split("## Metrics")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let named: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("| `broker_"))
        .flat_map(|line| line.split('|').nth(1).unwrap().split('`'))
        .filter(|name| name.starts_with("broker_"))
        .map(|name| name.split('{').next().unwrap())
        .collect();
    assert!(named.len() >= 12, "the README's metrics: {named:?}");
    for name in named {
        assert!(
            text.lines().any(|line| line.starts_with(name)),
            "the README names {name}, which /metrics does not serve:\n{text}"
        );
    }
}
