//! The admin API of webhooks (`X-Admin-Token`): register, list, change, remove, resume.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::admin::check_admin_header;
use super::body::read_json;
use super::state::AppState;
use super::{Body, json_response, query_value};
use crate::error::ApiError;
use crate::webhooks::{Change, WebhookError};

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::Invalid(message) => Self::BadRequest(message),
            WebhookError::NotFound => Self::NotFound,
            WebhookError::Full(message) => Self::Conflict(message),
            WebhookError::Conflict => Self::Conflict(error.to_string()),
            WebhookError::Storage(error) => error.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    tenant: String,
    url: String,
    /// The filter, as `/sse?events=` takes it; absent or empty: every event.
    #[serde(default)]
    events: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    id: String,
    url: Option<String>,
    events: Option<String>,
    secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ById {
    id: String,
}

/// `GET /admin/webhooks[?tenant=T]`: every webhook (of `T`) with its delivery state.
pub async fn list(state: &Arc<AppState>, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    check_admin_header(state, request)?;
    let tenant = request
        .uri()
        .query()
        .and_then(|query| query_value(query, "tenant"));
    let webhooks = state.webhooks.list(tenant.as_deref()).await?;
    Ok(json_response(StatusCode::OK, &json!({ "webhooks": webhooks })))
}

/// `POST /admin/webhooks`: registers a webhook; it receives the events committed from now on.
pub async fn register(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    check_admin_header(state, &request)?;
    let body: Register = read_json(state.body_timeout(), request).await?;
    let webhook = state
        .webhooks
        .create(&body.tenant, body.url, body.events, body.secret)
        .await?;
    Ok(json_response(StatusCode::OK, &json!(webhook)))
}

/// `POST /admin/webhooks/update`: changes a webhook's URL, filter or secret.
pub async fn update(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    check_admin_header(state, &request)?;
    let body: Update = read_json(state.body_timeout(), request).await?;
    let change = Change {
        url: body.url,
        events: body.events,
        secret: body.secret,
    };
    let webhook = state.webhooks.update(&body.id, change).await?;
    Ok(json_response(StatusCode::OK, &json!(webhook)))
}

/// `POST /admin/webhooks/delete`: removes a webhook; its delivery stops.
pub async fn delete(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    check_admin_header(state, &request)?;
    let body: ById = read_json(state.body_timeout(), request).await?;
    state.webhooks.delete(&body.id).await?;
    Ok(json_response(StatusCode::OK, &json!({ "deleted": body.id })))
}

/// `POST /admin/webhooks/resume`: a paused webhook tries again where it stopped.
pub async fn resume(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    check_admin_header(state, &request)?;
    let body: ById = read_json(state.body_timeout(), request).await?;
    let webhook = state.webhooks.resume(&body.id).await?;
    Ok(json_response(StatusCode::OK, &json!(webhook)))
}
