//! The accept loop: HTTP/1.1 and HTTP/2 on each connection (over TLS when given a terminator),
//! graceful shutdown on cancel, and the per-connection bounds: a cap on open connections, a time
//! limit for a request's headers, and a limit on how long a write may make no progress.

mod stall_guard;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use self::stall_guard::StallGuard;

use crate::http::{Body, ClientAddr};
use crate::metrics::{OpenGuard, metrics};
use crate::tls::TlsTerminator;

/// Probes for idle connections: the first after 30 s of silence, then every 10 s, 3 unanswered
/// and the connection is dropped. A stream with nothing to send is otherwise never found dead.
const TCP_KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10))
    .with_retries(3);

/// hyper's HTTP/1.1 read and write buffer bound per connection (its minimum).
const MAX_HTTP1_BUFFER: usize = 8 * 1024;

/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds every connection is held to (flags `--max_connections`, `--header_timeout`,
/// `--write_timeout`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most; past it new ones are closed at once and open ones carry on.
    pub max_connections: usize,
    /// Time a client gets to send a request's headers (slowloris).
    pub header_timeout: Duration,
    /// Time a write may make no progress before the connection is dropped (a client that stopped
    /// reading its stream).
    pub write_timeout: Duration,
}

/// Serves `listener` with `handler` until `shutdown` is cancelled, then waits for open connections.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<TlsTerminator>>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut refused_since_last_log = 0u64;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            // Closed at once: a client sees a reset rather than a connection that never answers.
            refused_since_last_log += 1;
            if refused_since_last_log.is_power_of_two() {
                tracing::warn!(
                    refused = refused_since_last_log,
                    max_connections = limits.max_connections,
                    "connection limit reached; refusing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&TCP_KEEPALIVE);
        let watcher = graceful.watcher();
        let handler = handler.clone();
        let tls = tls.clone();
        // The TLS handshake runs on the connection's own task so a slow client cannot stall accepts.
        tokio::spawn(async move {
            let _permit = permit;
            let _open = OpenGuard::new(&metrics().open_connections);
            let result = match tls {
                None => serve_connection(stream, peer, limits, watcher, handler).await,
                // Boxed: a TLS connection's state is about 7 KiB, and a task is as large as its
                // largest branch, so unboxed every plain connection would pay for it too.
                Some(tls) => {
                    Box::pin(serve_tls_connection(stream, peer, &tls, limits, watcher, handler)).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing"),
    }
}

/// Serves one connection after its TLS handshake, which gets the same time as a request's headers.
async fn serve_tls_connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &TlsTerminator,
    limits: ConnectionLimits,
    watcher: Watcher,
    handler: H,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
        Err(_) | Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(stream))) => serve_connection(stream, peer, limits, watcher, handler).await,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            Ok(())
        }
    }
}

async fn serve_connection<S, H, F>(
    stream: S,
    peer: SocketAddr,
    limits: ConnectionLimits,
    watcher: Watcher,
    handler: H,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |mut request: Request<Incoming>| {
        // Handlers that limit per client (wrong admin tokens) read the address from here.
        request.extensions_mut().insert(ClientAddr(peer));
        // Boxed: hyper keeps a slot the size of the service's future for the connection's whole
        // life, and the API's future (every handler's state) is kilobytes. Boxed, the slot is a
        // pointer and the handler's state is freed once the response head is out.
        let answer = Box::pin(handler(request));
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's smallest buffers: an idle SSE connection keeps its read buffer for as long as it
        // is open (measured 30.3 -> 24.2 KiB RssAnon per idle stream), and request heads over
        // 8 KiB are answered 431.
        .max_buf_size(MAX_HTTP1_BUFFER);
    let connection = builder
        .serve_connection(
            TokioIo::new(StallGuard::new(stream, limits.write_timeout)),
            service,
        )
        .into_owned();
    watcher.watch(connection).await
}
