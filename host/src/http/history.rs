//! `GET /events`: HTTP framing of the history path (`crate::history`): authenticate, read the
//! filter, the cursor and the page size, and answer one page with the cursor of the next.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::sse::events_filter;
use super::state::AppState;
use super::{Body, json_response, query_value, served_to};
use crate::error::ApiError;
use crate::event_log::PageStart;
use crate::history::{DEFAULT_LIMIT, HistoryError, MAX_LIMIT, Page};

impl From<HistoryError> for ApiError {
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::Forbidden => ApiError::Forbidden(error.to_string()),
            HistoryError::Store(e) => e.into(),
        }
    }
}

pub async fn page(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let identity = super::caller(state, &request).await?;
    let query = request.uri().query();
    let filter = events_filter(query)?;
    let (start, limit) = page_request(query)?;
    let page = state.history.page(&identity, &filter, start, limit).await?;
    Ok(served_to(
        json_response(StatusCode::OK, &page_json(&page)),
        &identity.user.username,
    ))
}

/// Where the page starts (`before` or `after`, newest first when neither) and its size (`limit`);
/// 400 naming the parameter that is wrong.
pub fn page_request(query: Option<&str>) -> Result<(PageStart, usize), ApiError> {
    let param = |key: &str| query.and_then(|query| query_value(query, key));
    let id = |key: &str, text: String| {
        text.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "{key}: an event id (a non-negative integer), got {text:?}"
            ))
        })
    };
    let start = match (param("before"), param("after")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("give before or after, not both".into()));
        }
        (Some(before), None) => PageStart::Before(id("before", before)?),
        (None, Some(after)) => PageStart::After(id("after", after)?),
        (None, None) => PageStart::Before(u64::MAX),
    };
    let limit = match param("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit: 1 to {MAX_LIMIT} events, got {text:?}"
                )));
            }
        },
    };
    Ok((start, limit))
}

/// `{"events": [{"id", "event", "data", "timestamp"}], "next": <id or null>}`: `next` is the
/// cursor to pass as the same parameter (`before` or `after`) for the following page.
pub fn page_json(page: &Page) -> Value {
    let events: Vec<Value> = page
        .events
        .iter()
        .map(|event| {
            json!({"id": event.seq, "event": event.event, "data": event.data, "timestamp": event.timestamp})
        })
        .collect();
    let next = page.next;
    json!({"events": events, "next": next})
}
