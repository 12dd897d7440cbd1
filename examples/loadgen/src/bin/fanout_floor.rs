//! `fanout-floor`: the least an HTTP server can do for `broker-load --scenario fanout`, to measure
//! Broker's fan-out against in the same run. It is Broker's own stack (tokio, hyper's HTTP/1.1, one
//! broadcast channel of frames rendered once) with nothing else: no users, no authentication, no
//! storage or commit, no guests, no per-stream checks. Every user exists, every login answers the
//! same token, every insert is published at once (never stored) and every `/sse` gets every event
//! from then on. What this costs per delivery on a machine is that machine's floor for the shape.
//!
//!   fanout-floor [--bind 127.0.0.1:0]   # prints "fanout-floor listening on http://ADDR"

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Frames a subscriber may fall behind by; one that falls further is dropped (the run counts its
/// missing events as lost, so a floor that cannot keep up shows).
const LIVE_BUFFER: usize = 4096;
/// Largest insert body read; a larger one is answered 413 (broker-load sends a few dozen bytes).
const MAX_BODY: usize = 1 << 20;

struct Floor {
    frames: broadcast::Sender<Bytes>,
    next_id: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bind = match (args.next().as_deref(), args.next()) {
        (Some("--bind"), Some(address)) => address,
        (None, _) => "127.0.0.1:0".to_owned(),
        _ => anyhow::bail!("usage: fanout-floor [--bind ADDRESS:PORT]"),
    };
    let listener = TcpListener::bind(&bind).await?;
    eprintln!("fanout-floor listening on http://{}", listener.local_addr()?);
    let floor = Arc::new(Floor {
        frames: broadcast::channel(LIVE_BUFFER).0,
        next_id: AtomicU64::new(1),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let floor = floor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let floor = floor.clone();
                async move { Ok::<_, Infallible>(answer(&floor, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(floor: &Floor, request: Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/create_user") => json(StatusCode::OK, "{}"),
        (&Method::POST, "/login") => json(StatusCode::OK, r#"{"jwt":"floor"}"#),
        (&Method::POST, "/insert") => insert(floor, request).await,
        (&Method::GET, "/sse") => subscribe(floor),
        _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
    }
}

/// Publishes the insert's frame to every subscriber and answers; nothing is kept.
async fn insert(floor: &Floor, request: Request<Incoming>) -> Response<Body> {
    let Ok(body) = Limited::new(request.into_body(), MAX_BODY).collect().await else {
        return json(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"error":"body unreadable or over 1 MiB"}"#,
        );
    };
    let Ok(insert) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return json(StatusCode::BAD_REQUEST, r#"{"error":"invalid JSON"}"#);
    };
    let id = floor.next_id.fetch_add(1, Ordering::Relaxed);
    let name = insert["event"].as_str().unwrap_or("event");
    let frame = format!("event:{name}\nid:{id}\ndata:{}\n\n", insert["data"]);
    let _ = floor.frames.send(Bytes::from(frame));
    json(StatusCode::OK, "{}")
}

/// Every frame published from now on, until the subscriber lags past the buffer.
fn subscribe(floor: &Floor) -> Response<Body> {
    let frames = futures_util::stream::unfold(floor.frames.subscribe(), |mut receiver| async move {
        let frame = receiver.recv().await.ok()?;
        Some((Ok::<_, Infallible>(Frame::data(frame)), receiver))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed_unsync(StreamBody::new(frames.boxed())))
        .expect("a valid response")
}

fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(BodyExt::boxed_unsync(Full::new(Bytes::from_static(
            body.as_bytes(),
        ))))
        .expect("a valid response")
}
