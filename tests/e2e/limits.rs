//! Resource bounds a client cannot talk its way past: open connections, slow requests, and streams
//! whose reader went away without closing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, http_client};

fn address(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; true if it did within `wait`.
async fn closed_within(socket: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = vec![0; 64 * 1024];
    let reading = async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, reading).await.is_ok()
}

#[tokio::test]
async fn past_max_connections_new_connections_are_refused_and_open_streams_carry_on() {
    let server = TestServer::start_with(&["--max_connections", "3"]).await;
    let jwt = server.signup("many", "t").await;
    // Three connections: two streams and one kept-alive client for inserts.
    let mut first = server.subscribe(&jwt).await;
    let second_client = http_client().build().unwrap();
    let response = second_client
        .get(server.endpoint("/sse"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    let mut second = crate::support::SseStream::new(response);
    let inserter = http_client().build().unwrap();
    assert!(
        inserter
            .get(server.endpoint("/"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    let refused = http_client()
        .build()
        .unwrap()
        .get(server.endpoint("/"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a fourth connection is closed at once: {refused:?}"
    );

    let insert = |n: u64| {
        inserter
            .post(server.endpoint("/insert"))
            .bearer_auth(&jwt)
            .json(&json!({"event": "e", "data": n}))
            .send()
    };
    assert_eq!(insert(1).await.unwrap().status(), StatusCode::OK);
    assert_eq!(first.next().await.data, json!(1));
    assert_eq!(second.next().await.data, json!(1));
    // The operator is told.
    server.wait_for_log("connection limit reached", 1).await;

    // A stream that ends gives its place back.
    drop(second);
    drop(second_client);
    let mut admitted = false;
    for n in 2..50 {
        assert_eq!(insert(n).await.unwrap().status(), StatusCode::OK);
        if http_client()
            .build()
            .unwrap()
            .get(server.endpoint("/"))
            .send()
            .await
            .is_ok()
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(admitted, "a closed stream frees its connection slot");
}

#[tokio::test]
async fn requests_that_trickle_in_are_cut_off() {
    let server = TestServer::start_with(&["--request_timeout", "1"]).await;

    // Headers that never finish (slowloris): the connection is closed.
    let mut slow_headers = TcpStream::connect(address(&server)).await.unwrap();
    slow_headers
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut slow_headers, Duration::from_secs(10)).await);

    // A body that never finishes: 408 with a JSON error, then the connection closes.
    let mut slow_body = TcpStream::connect(address(&server)).await.unwrap();
    let head = "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user";
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow_body.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error""#), "{answer}");
}

#[tokio::test]
async fn a_stream_whose_client_stopped_reading_is_dropped() {
    let server = TestServer::start_with(&["--write_timeout", "1"]).await;
    let jwt = server.signup("stuck", "t").await;
    let mut socket = TcpStream::connect(address(&server)).await.unwrap();
    let request = format!("GET /sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {jwt}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();

    // 24 MiB of events, far more than the socket buffers hold, while this client reads nothing.
    let big = "x".repeat(512 * 1024);
    for _ in 0..48 {
        server.insert_ok(&jwt, "big", json!(big)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // What the buffers held arrives, then the end: the server gave up on this connection.
    assert!(
        closed_within(&mut socket, Duration::from_secs(20)).await,
        "the stuck stream was closed"
    );
}

#[tokio::test]
async fn request_headers_past_8_kib_are_refused_with_431() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(server.endpoint("/"))
        .header("x-padding", "p".repeat(10 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Positive control: ordinary headers pass.
    let response = server.http.get(server.endpoint("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
