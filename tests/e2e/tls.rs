//! `--secure=true` with your own certificate: the whole API and SSE over real TLS on loopback,
//! HTTP/2 and HTTP/1.1 by ALPN, the plain port only redirecting, bad key/certificate files refusing
//! start-up with the file named, and a certificate replaced on disk reaching new connections while
//! open streams carry on.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{StatusCode, Version};
use serde_json::json;
use tempfile::TempDir;

use crate::support::tls::{Leaf, TestCa, client_trusting, served_certificate};
use crate::support::{TestServer, start_refused};

const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// Starts Broker over HTTPS with `leaf`; its `http` client trusts only `ca`.
async fn start_secure(dir: Arc<TempDir>, ca: &TestCa, leaf: &Leaf) -> TestServer {
    let (key, chain) = leaf.write(&dir.path().join("certs"));
    let mut server =
        TestServer::start_in(dir, &own_cert_flags(&key, &chain).each_ref().map(String::as_str)).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    server.http = client_trusting(&ca.pem()).build().unwrap();
    server
}

fn own_cert_flags(key: &Path, chain: &Path) -> [String; 4] {
    [
        "--secure=true".into(),
        "--auto_cert=false".into(),
        format!("--key_path={}", key.display()),
        format!("--cert_path={}", chain.display()),
    ]
}

#[tokio::test]
async fn the_api_and_sse_work_over_https_with_your_own_certificate() {
    let ca = TestCa::new("Broker test CA");
    let leaf = ca.issue(LOOPBACK_NAMES);
    let server = start_secure(Arc::new(TempDir::new().unwrap()), &ca, &leaf).await;

    let jwt = server.signup("alice", "acme").await;
    let mut stream = server.subscribe(&jwt).await;
    let seq = server.insert_ok(&jwt, "news", json!({"title": "over TLS"})).await;
    let event = stream.next().await;
    assert_eq!((event.event.as_str(), event.id), ("news", seq));
    assert_eq!(event.data, json!({"title": "over TLS"}));

    // ALPN: HTTP/2 by default (browsers multiplex SSE streams over it), HTTP/1.1 when asked.
    let response = server.http.get(server.endpoint("/")).send().await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(served_certificate(&response), leaf.der);
    let http1 = client_trusting(&ca.pem()).http1_only().build().unwrap();
    let response = http1
        .get(server.endpoint("/verify"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);

    // A client that does not trust the CA gets no connection at all.
    let stranger = client_trusting(&TestCa::new("someone else").pem())
        .build()
        .unwrap();
    assert!(stranger.get(server.endpoint("/")).send().await.is_err());
}

#[tokio::test]
async fn a_chain_file_with_an_intermediate_is_served_whole() {
    let root = TestCa::new("Broker test root");
    let intermediate = root.intermediate("Broker test intermediate");
    let mut leaf = intermediate.issue(LOOPBACK_NAMES);
    // chain.pem: the leaf, then the intermediate. A client trusting only the root needs both.
    leaf.cert_pem = format!("{}{}", leaf.cert_pem, intermediate.pem());
    let server = start_secure(Arc::new(TempDir::new().unwrap()), &root, &leaf).await;
    let response = server.http.get(server.endpoint("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(served_certificate(&response), leaf.der);
}

#[tokio::test]
async fn the_plain_port_only_redirects_to_https() {
    let ca = TestCa::new("Broker test CA");
    let server = start_secure(Arc::new(TempDir::new().unwrap()), &ca, &ca.issue(LOOPBACK_NAMES)).await;
    let logs = server.logs();
    let plain = logs
        .split("plain HTTP on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the log names the plain port:\n{logs}"));
    let https_port = server.url.rsplit(':').next().unwrap();

    let no_redirects = crate::support::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let body = json!({"username": "alice", "password": "x"});
    let response = no_redirects
        .post(format!("http://{plain}/login?from=app"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        format!("https://127.0.0.1:{https_port}/login?from=app").as_str()
    );
    // Nothing is served in clear text: not even the login it was sent.
    let text = response.text().await.unwrap();
    assert!(!text.contains("jwt"), "{text}");
    assert!(server.logs().contains("only redirects to HTTPS"));
}

#[tokio::test]
async fn bad_key_or_certificate_files_refuse_to_start_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let ca = TestCa::new("Broker test CA");
    let (key, chain) = ca.issue(LOOPBACK_NAMES).write(&dir.path().join("right"));
    let (other_key, _) = ca.issue(LOOPBACK_NAMES).write(&dir.path().join("other"));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.pem");

    let cases = [
        (&other_key, &chain, "does not match the certificate"),
        (&missing, &chain, "cannot read the private key"),
        (&key, &missing, "cannot read the certificate chain"),
        (&key, &empty, "holds no certificate (empty chain)"),
        (&chain, &chain, "holds no PEM private key"),
    ];
    for (key, chain, reason) in cases {
        let flags = own_cert_flags(key, chain);
        let (status, log) = start_refused(dir.path(), &flags.each_ref().map(String::as_str)).await;
        assert!(!status.success(), "{flags:?}");
        let named = if reason.contains("private key") {
            key
        } else {
            chain
        };
        assert!(
            log.contains(reason) && log.contains(&named.display().to_string()),
            "{flags:?} should fail with {reason:?} naming {}:\n{log}",
            named.display()
        );
        assert!(!log.contains("broker listening"), "{log}");
    }
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_reaches_new_connections_and_open_streams_carry_on() {
    let ca = TestCa::new("Broker test CA");
    let first = ca.issue(LOOPBACK_NAMES);
    let dir = Arc::new(TempDir::new().unwrap());
    let server = start_secure(dir.clone(), &ca, &first).await;
    let jwt = server.signup("alice", "acme").await;
    let mut stream = server.subscribe(&jwt).await;

    // A file that disappears is reported once; the certificate in memory stays in service.
    let certs = dir.path().join("certs");
    std::fs::remove_file(certs.join("chain.pem")).unwrap();
    server.wait_for_log("cannot read the certificate chain", 1).await;
    let fresh = client_trusting(&ca.pem()).build().unwrap();
    let response = fresh.get(server.endpoint("/")).send().await.unwrap();
    assert_eq!(served_certificate(&response), first.der);
    crate::support::tls::write_atomically(&certs.join("chain.pem"), &first.cert_pem);

    // A renewal tool writes the key and then the chain: in between the pair does not match, which
    // Broker refuses while it keeps serving the first certificate.
    let second = ca.issue(LOOPBACK_NAMES);
    crate::support::tls::write_atomically(&certs.join("key.pem"), &second.key_pem);
    server
        .wait_for_log("do not load, still serving the previous certificate", 1)
        .await;
    let fresh = client_trusting(&ca.pem()).build().unwrap();
    let response = fresh.get(server.endpoint("/")).send().await.unwrap();
    assert_eq!(served_certificate(&response), first.der);

    crate::support::tls::write_atomically(&certs.join("chain.pem"), &second.cert_pem);
    server.wait_for_log("TLS: reloaded; now serving", 1).await;
    // A new client (a new connection) gets the new certificate.
    let fresh = client_trusting(&ca.pem()).build().unwrap();
    let response = fresh.get(server.endpoint("/")).send().await.unwrap();
    assert_eq!(served_certificate(&response), second.der);

    // The stream opened before the swap still delivers.
    let seq = server.insert_ok(&jwt, "after-swap", json!(2)).await;
    let event = stream.next().await;
    assert_eq!((event.event.as_str(), event.id), ("after-swap", seq));
    assert!(stream.next_within(Duration::from_millis(100)).await.is_none());
}

#[tokio::test]
async fn a_tls_handshake_gets_request_timeout_and_the_tls_port_keeps_max_connections() {
    let ca = TestCa::new("Broker test CA");
    let leaf = ca.issue(LOOPBACK_NAMES);
    let dir = Arc::new(TempDir::new().unwrap());
    let (key, chain) = leaf.write(&dir.path().join("certs"));
    let mut flags = own_cert_flags(&key, &chain).to_vec();
    flags.extend(["--request_timeout=1".to_owned(), "--max_connections=2".to_owned()]);
    let mut server = TestServer::start_in(dir, &flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    server.http = client_trusting(&ca.pem()).build().unwrap();
    let address = server.url.trim_start_matches("https://").to_owned();

    // A client that connects and never starts its handshake is dropped after --request_timeout.
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut silent, &mut byte),
    )
    .await
    .expect("the server closed the silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        started.elapsed()
    );

    // Two TLS connections fill --max_connections=2; a third is closed at once, and the two carry on.
    let jwt = server.signup("full", "t").await;
    let mut first = server.subscribe(&jwt).await;
    let other = client_trusting(&ca.pem()).build().unwrap();
    let response = other
        .get(server.endpoint("/sse"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    let mut second = crate::support::SseStream::new(response);
    let third = client_trusting(&ca.pem()).build().unwrap();
    assert!(
        third.get(server.endpoint("/")).send().await.is_err(),
        "a third connection is refused"
    );
    drop(third);
    // The first client's connection (HTTP/2) still carries its requests and its stream.
    let seq = server.insert_ok(&jwt, "still", json!(1)).await;
    assert_eq!(first.next().await.id, seq);
    assert_eq!(second.next().await.id, seq);
}
