//! `--secure=true --auto_cert=true`: Broker orders its certificate from a real ACME server (Debian's
//! pebble on loopback, validating the TLS-ALPN-01 challenge against Broker's HTTPS port), serves the
//! API and SSE with it, and after a restart serves the cached certificate without ordering again.
//! An unreachable ACME server is retried in the background without taking the server down.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use crate::support::pebble::{Pebble, free_port};
use crate::support::tls::{client_trusting, served_certificate};
use crate::support::{TestServer, start_refused};

/// Broker as an ACME client of `pebble` for `localhost`, serving HTTPS on `port`; its `http` client
/// trusts only the root pebble issues under.
async fn start_with_acme(dir: Arc<TempDir>, pebble: &Pebble, port: u16) -> TestServer {
    let flags = [
        "--secure=true".to_owned(),
        "--domain=localhost".to_owned(),
        format!("--tls_port={port}"),
        format!("--acme_directory={}", pebble.directory),
        format!("--acme_ca={}", pebble.listener_ca_path.display()),
        format!("--certs={}", dir.path().join("certs").display()),
        "--acme_email=operator@broker.test".to_owned(),
    ];
    let mut server = TestServer::start_in(dir, &flags.each_ref().map(String::as_str)).await;
    // The certificate names `localhost`: connect by that name, to the loopback port.
    server.url = format!("https://localhost:{port}");
    server.http = client_trusting(&pebble.issuing_root)
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    server
}

#[tokio::test]
async fn a_certificate_is_obtained_by_acme_serves_sse_and_is_reused_after_a_restart() {
    let port = free_port();
    let pebble = Pebble::start(port).await;
    let dir = Arc::new(TempDir::new().unwrap());
    let server = start_with_acme(dir.clone(), &pebble, port).await;
    server.wait_for_log("ACME: certificate cached in", 1).await;
    let logs = server.logs();
    assert!(
        logs.contains("ACME: obtained and serving a new certificate for localhost"),
        "{logs}"
    );
    assert!(
        logs.contains("answering an ACME TLS-ALPN-01 validation"),
        "pebble validated the challenge on Broker's HTTPS port:\n{logs}"
    );
    assert_eq!(pebble.issued(), 1, "{}", pebble.log());
    // The cache holds private keys: an owner-only directory and files, and no partial writes left
    // behind.
    let certs_mode = std::fs::metadata(dir.path().join("certs"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(certs_mode, 0o700, "--certs has mode {certs_mode:o}");
    let mut cached: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("certs")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        cached.push(name.split('-').next().unwrap().to_owned());
    }
    cached.sort();
    assert_eq!(cached, ["account", "cert"]);

    let jwt = server.signup("alice", "acme").await;
    let mut stream = server.subscribe(&jwt).await;
    let seq = server.insert_ok(&jwt, "news", json!({"via": "acme"})).await;
    let event = stream.next().await;
    assert_eq!(
        (event.event.as_str(), event.id, event.data),
        ("news", seq, json!({"via": "acme"}))
    );
    let response = server.http.get(server.endpoint("/")).send().await.unwrap();
    let issued = served_certificate(&response);
    drop(stream);
    assert!(server.terminate().await.success());

    let server = start_with_acme(dir, &pebble, port).await;
    server
        .wait_for_log("ACME: serving the cached certificate for localhost", 1)
        .await;
    let response = server.http.get(server.endpoint("/")).send().await.unwrap();
    assert_eq!(
        served_certificate(&response),
        issued,
        "the cached certificate is served"
    );
    // The user from before the restart logs in over the reused certificate.
    server.login("alice").await;
    assert_eq!(pebble.issued(), 1, "no second order:\n{}", pebble.log());
    assert!(!server.logs().contains("obtained and serving a new certificate"));
}

#[tokio::test]
async fn an_unreachable_acme_server_is_retried_without_stopping_broker() {
    let dir = Arc::new(TempDir::new().unwrap());
    let closed = free_port();
    let flags = [
        "--secure=true".to_owned(),
        format!("--acme_directory=https://127.0.0.1:{closed}/dir"),
        format!("--certs={}", dir.path().join("certs").display()),
    ];
    let server = TestServer::start_in(dir.clone(), &flags.each_ref().map(String::as_str)).await;
    // rustls-acme backs off 1 s, then 2 s: two failures logged with their reason, still running.
    server.wait_for_log("will retry", 2).await;
    assert!(server.logs().contains("Connection refused") || server.logs().contains("ConnectError"));
    // Without a certificate the TLS handshake itself is refused: a client that would accept any
    // certificate at all still cannot connect, and is refused at once rather than left hanging.
    // The process is alive and stops cleanly. The port does take TCP connections: what fails is
    // the handshake, not a listener that is missing.
    let address = server.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&address).await;
    assert!(tcp.is_ok(), "the HTTPS port accepts connections: {tcp:?}");
    drop(tcp);
    let client = crate::support::http_client()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let refused = client
        .get(server.endpoint("/"))
        .send()
        .await
        .expect_err("no certificate, no handshake");
    assert!(!refused.is_timeout(), "refused, not hung: {refused:?}");
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn conflicting_acme_directory_flags_refuse_to_start() {
    let dir = TempDir::new().unwrap();
    let (status, log) = start_refused(
        dir.path(),
        &[
            "--secure=true",
            "--acme_staging=true",
            "--acme_directory=https://acme.example/dir",
        ],
    )
    .await;
    assert!(!status.success());
    assert!(log.contains("--acme_staging and --acme_directory"), "{log}");
}

#[tokio::test]
async fn a_certificate_is_renewed_once_a_third_of_its_lifetime_is_left() {
    // Certificates valid for 60 s: renewal is due about 40 s after issue, with 20 s left.
    let port = free_port();
    let pebble = Pebble::start_issuing_for(port, Some(60)).await;
    let dir = Arc::new(TempDir::new().unwrap());
    let server = start_with_acme(dir, &pebble, port).await;
    server.wait_for_log("ACME: certificate cached in", 1).await;
    let issued = std::time::Instant::now();
    let first = served_certificate(&server.http.get(server.endpoint("/")).send().await.unwrap());
    // Not renewed early ...
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(
        pebble.issued(),
        1,
        "renewed before a third of the lifetime was left:\n{}",
        pebble.log()
    );
    // ... and renewed before it expires, the new certificate reaching new connections.
    let deadline = issued + Duration::from_secs(55);
    while pebble.issued() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "not renewed in time:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.wait_for_log("ACME: certificate cached in", 2).await;
    let renewed_after = issued.elapsed();
    let fresh = crate::support::tls::client_trusting(&pebble.issuing_root)
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    let second = served_certificate(&fresh.get(server.endpoint("/")).send().await.unwrap());
    assert_ne!(
        first, second,
        "a new certificate is served after {renewed_after:?}"
    );
}
