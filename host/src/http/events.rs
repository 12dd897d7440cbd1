//! `POST /insert`: authenticate, then the library insert path.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::read_json;
use super::state::AppState;
use super::{Body, json_response, served_to};
use crate::error::ApiError;
use crate::idempotency::IdempotencyKey;
use crate::insert::InsertError;
use crate::validate;

#[derive(Deserialize)]
struct Insert {
    event: String,
    /// Any JSON, `null` included; the field itself is required.
    data: Value,
}

impl From<InsertError> for ApiError {
    fn from(error: InsertError) -> Self {
        match error {
            InsertError::Forbidden(_) => ApiError::Forbidden(error.to_string()),
            InsertError::Conflict => ApiError::Conflict(error.to_string()),
            InsertError::Rejected(_) => ApiError::BadRequest(error.to_string()),
            InsertError::Guest(e) => ApiError::Guest(e.to_string()),
            InsertError::Store(e) => e.into(),
        }
    }
}

/// The request's `Idempotency-Key`, scoped to the inserting user; 400 when it is not 1 to 255
/// printable ASCII characters.
pub fn idempotency_key(
    headers: &HeaderMap,
    tenant: &str,
    username: &str,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("\u{0}");
    IdempotencyKey::new(tenant, username, text)
        .map(Some)
        .map_err(ApiError::BadRequest)
}

pub async fn insert(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let identity = super::caller(state, &request).await?;
    let user = &identity.user;
    // Before the body is read: a refused insert costs the server as little as it can.
    state.limits.insert(user).await?;
    let max_bytes = state.limits.storage(&user.tenant_name).await?;
    let key = idempotency_key(request.headers(), &user.tenant_name, &user.username)?;
    let body: Insert = read_json(state.body_timeout(), request).await?;
    validate::event_name(&body.event).map_err(ApiError::BadRequest)?;
    // Counted until answered, for an erasure of the user's events that begins meanwhile; refused
    // if the user went since it was authenticated.
    let Some(_under_way) = state.erasure.insert_begins(user).await? else {
        return Err(ApiError::unauthorized("the user no longer exists"));
    };
    let event = state
        .inserts
        .insert(&identity, body.event, body.data, key, max_bytes)
        .await?;
    let answer = json!({ "id": event.id, "seq": event.seq });
    Ok(served_to(
        json_response(StatusCode::OK, &answer),
        &identity.user.username,
    ))
}
