//! `GET /sse`: a tenant's events as Server-Sent Events, in the exact shape the npm `broker-client`
//! parses (`event:<name>\nid:<seq>\ndata:<json>\n\n`, one write per event).
//!
//! Order of work on connect: subscribe to the live channel, then replay from the store (the newest
//! event of each name, or every event after `Last-Event-ID`), then live events, skipping sequences
//! already sent. A stream that lags behind the live channel reads the gap back from the store and
//! carries on: `broker-client` never reconnects, so ending the stream would lose the user.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{Body, served_to};
use crate::auth;
use crate::error::ApiError;
use crate::model::Event;
use crate::state::AppState;

type Live = broadcast::Receiver<Arc<Event>>;

/// Frames buffered per connection before the stream task waits for the client.
const CONNECTION_BUFFER: usize = 64;
/// Events read from the store per query during replay and catch-up.
const STORE_PAGE: usize = 500;

pub async fn subscribe(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let identity = auth::authenticate(state, request.headers()).await?;
    let resume_after = last_event_id(request.headers(), request.uri().query());
    // Joined before answering: every insert after the client sees 200 reaches this stream.
    let live = state.fanout.subscribe(&identity.user.tenant_name);
    let user_changes = state.fanout.watch_user_changes();
    let (frames, outgoing) = mpsc::channel(CONNECTION_BUFFER);
    let stream = EventStream {
        state: state.clone(),
        username: identity.user.username.clone(),
        tenant: identity.user.tenant_name.clone(),
        frames,
        cursor: 0,
    };
    tokio::spawn(stream.run(resume_after, live, user_changes));
    let body =
        StreamBody::new(ReceiverStream::new(outgoing).map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))));
    let mut response = Response::new(BodyExt::boxed(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(served_to(response, &identity.user.username))
}

/// The resume point: the `Last-Event-ID` header, else the `last_event_id` query parameter. Anything
/// that is not a sequence number (such as the original broker's uuids) means "no resume".
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Option<u64> {
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_query = || {
        query?
            .split('&')
            .find_map(|pair| pair.strip_prefix("last_event_id="))
            .map(str::to_owned)
    };
    from_header.or_else(from_query)?.trim().parse().ok()
}

/// The wire form of one event.
pub fn sse_frame(event: &Event) -> Bytes {
    Bytes::from(format!(
        "event:{}\nid:{}\ndata:{}\n\n",
        event.event, event.seq, event.data
    ))
}

/// Why a stream ended.
#[derive(Debug)]
enum End {
    ClientGone,
    ShuttingDown,
    UserChanged,
    Store(crate::store::StoreError),
}

struct EventStream {
    state: Arc<AppState>,
    username: String,
    tenant: String,
    frames: mpsc::Sender<Bytes>,
    /// Highest sequence sent or deliberately skipped (covered by the latest-per-name replay).
    cursor: u64,
}

impl EventStream {
    async fn run(mut self, resume_after: Option<u64>, live: Live, user_changes: broadcast::Receiver<String>) {
        let end = self.serve(resume_after, live, user_changes).await;
        tracing::debug!(
            username = self.username,
            tenant = self.tenant,
            ?end,
            "sse stream ended"
        );
        if let End::Store(error) = end {
            tracing::error!(%error, tenant = self.tenant, "sse stream stopped by a store error");
        }
    }

    async fn serve(
        &mut self,
        resume_after: Option<u64>,
        mut live: Live,
        mut user_changes: broadcast::Receiver<String>,
    ) -> End {
        let state = self.state.clone();
        let replayed = match resume_after {
            Some(after) => {
                self.cursor = after;
                self.catch_up().await
            }
            None => self.replay_latest().await,
        };
        if let Err(end) = replayed {
            return end;
        }
        let keep_alive = state.config.keep_alive;
        let mut keep_alive_timer = tokio::time::interval(Duration::from_secs(keep_alive.max(1)));
        keep_alive_timer.reset();
        loop {
            let step = tokio::select! {
                () = state.shutdown.cancelled() => Err(End::ShuttingDown),
                () = self.frames.closed() => Err(End::ClientGone),
                change = user_changes.recv() => match change {
                    Ok(username) if username != self.username => Ok(()),
                    // A missed notice may have been ours: re-check.
                    Ok(_) | Err(RecvError::Lagged(_)) => self.check_user(),
                    Err(RecvError::Closed) => Err(End::ShuttingDown),
                },
                received = live.recv() => match received {
                    Ok(event) => self.send_if_new(&event).await,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, tenant = self.tenant, "sse subscriber lagged; catching up from the store");
                        self.catch_up().await
                    }
                    Err(RecvError::Closed) => Err(End::ShuttingDown),
                },
                _ = keep_alive_timer.tick(), if keep_alive > 0 => self.send(Bytes::from_static(b":\n\n")).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends the newest event of each name, oldest first; everything up to the tenant's newest
    /// sequence at that moment counts as covered.
    async fn replay_latest(&mut self) -> Result<(), End> {
        let replay = self.state.store.latest_events(&self.tenant).map_err(End::Store)?;
        for event in &replay.events {
            self.send(sse_frame(event)).await?;
        }
        self.cursor = replay.last_seq;
        Ok(())
    }

    /// Sends every stored event after the cursor, page by page, until the store has no more.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let page = self
                .state
                .store
                .events_after(&self.tenant, self.cursor, STORE_PAGE)
                .map_err(End::Store)?;
            let full = page.len() == STORE_PAGE;
            for event in &page {
                self.send_if_new(event).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn send_if_new(&mut self, event: &Event) -> Result<(), End> {
        if event.seq <= self.cursor {
            return Ok(());
        }
        self.send(sse_frame(event)).await?;
        self.cursor = event.seq;
        Ok(())
    }

    /// Waits for room in the connection's buffer, but not past shutdown.
    async fn send(&self, frame: Bytes) -> Result<(), End> {
        tokio::select! {
            sent = self.frames.send(frame) => sent.map_err(|_| End::ClientGone),
            () = self.state.shutdown.cancelled() => Err(End::ShuttingDown),
        }
    }

    /// Ends the stream if the user was revoked, removed or moved to another tenant.
    fn check_user(&self) -> Result<(), End> {
        match self.state.store.get_user(&self.username) {
            Ok(Some(user)) if !user.revoked && user.tenant_name == self.tenant => Ok(()),
            Ok(_) => Err(End::UserChanged),
            Err(error) => Err(End::Store(error)),
        }
    }
}
