//! `GET /sse`: HTTP framing of the subscribe path (`crate::subscribe`): authenticate, read the
//! resume point, and write each frame the stream yields as one body chunk.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response};
use tokio_stream::StreamExt;

use super::state::AppState;
use super::{Body, query_value, served_to};
use crate::error::ApiError;
use crate::filter::EventFilter;
use crate::subscribe::SubscribeError;

impl From<SubscribeError> for ApiError {
    fn from(error: SubscribeError) -> Self {
        match error {
            SubscribeError::UserChanged => ApiError::Unauthorized(error.to_string()),
            SubscribeError::Forbidden | SubscribeError::PresenceForbidden => {
                ApiError::Forbidden(error.to_string())
            }
            SubscribeError::Store(e) => e.into(),
        }
    }
}

pub async fn subscribe(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let identity = match super::caller(state, &request).await {
        // A browser's own EventSource cannot send an Authorization header: asked, the browser
        // sends the Basic credentials it has (or asks its user for) for this origin.
        Err(ApiError::Unauthorized(message)) if !request.headers().contains_key(header::AUTHORIZATION) => {
            return Err(ApiError::BasicChallenge(message));
        }
        identity => identity?,
    };
    let query = request.uri().query();
    let filter = events_filter(query)?;
    let resume_after = last_event_id(request.headers(), query);
    let presence = with_presence(query)?;
    let permit = state.limits.open_stream(&identity.user).await?;
    // Joined before answering: every insert after the client sees 200 reaches this stream.
    let frames = state
        .streams
        .subscribe(&identity, filter, resume_after, presence)
        .await?;
    // The stream counts against its user and tenant until its body is dropped, however it ends.
    let frames = frames.map(move |frame| {
        let _counted = &permit;
        frame
    });
    Ok(served_to(event_stream_response(frames), &identity.user.username))
}

/// The connection's `?events=` filter: everything without one, 400 naming the problem for a bad one.
pub fn events_filter(query: Option<&str>) -> Result<EventFilter, ApiError> {
    let param = query.and_then(|query| query_value(query, "events"));
    EventFilter::from_param(param.as_deref()).map_err(ApiError::BadRequest)
}

/// `?presence=true`: the stream also carries the tenant's presence; `false` or absent: not.
pub fn with_presence(query: Option<&str>) -> Result<bool, ApiError> {
    match query.and_then(|query| query_value(query, "presence")).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::BadRequest("presence must be true or false".into())),
    }
}

/// `GET /presence`: the users of the caller's tenant with an open stream, as `?presence=true`
/// streams first get them.
pub async fn presence(
    state: &Arc<AppState>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let identity = super::caller(state, request).await?;
    let users = state.streams.present_users(&identity).await?;
    let body = serde_json::json!({ "users": users });
    Ok(served_to(
        super::json_response(hyper::StatusCode::OK, &body),
        &identity.user.username,
    ))
}

/// A `text/event-stream` response writing each frame as one body chunk.
pub fn event_stream_response(frames: impl Stream<Item = Bytes> + Send + 'static) -> Response<Body> {
    let body = StreamBody::new(frames.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))));
    let mut response = Response::new(BodyExt::boxed_unsync(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The resume point: the `Last-Event-ID` header, else the `last_event_id` query parameter. Anything
/// that is not a sequence number (such as the original broker's uuids) means "no resume".
pub fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Option<u64> {
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_query = || query_value(query?, "last_event_id");
    from_header.or_else(from_query)?.trim().parse().ok()
}
