//! Logging in (JWT) and verifying a caller for other services (biscuit).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::body::read_json;
use super::{Body, json_response, served_to};
use crate::auth::{self, AuthError};
use crate::error::ApiError;
use crate::state::AppState;

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Store(e) => ApiError::internal(e),
            AuthError::Hashing(e) => ApiError::internal(anyhow::anyhow!(e)),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
    totp: Option<String>,
}

pub async fn login(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: Login = read_json(request).await?;
    let user = auth::verify_password(state, &body.username, body.password).await?;
    if user.two_factor && !totp_valid(&user, body.totp.as_deref()) {
        return Err(ApiError::unauthorized("a valid totp is required for this user"));
    }
    let jwt = state
        .jwt
        .issue(&user, state.clock.now_secs())
        .map_err(ApiError::internal)?;
    Ok(served_to(
        json_response(StatusCode::OK, &json!({ "jwt": jwt })),
        &user.username,
    ))
}

pub async fn verify(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let identity = auth::authenticate(state, request.headers()).await?;
    let scopes = identity.user.scope_list();
    let token = state
        .biscuit
        .token_for(scopes)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let body = json!({
        "expiry": identity.expiry,
        "key": state.biscuit.public_key(),
        "scopes": scopes,
        "token": token,
        "username": identity.user.username,
    });
    Ok(served_to(
        json_response(StatusCode::OK, &body),
        &identity.user.username,
    ))
}

/// Login two-factor codes. Until TOTP secrets exist (the identity work), no code is valid, so a
/// two-factor user is refused rather than let in without a second factor.
fn totp_valid(_user: &crate::model::User, _code: Option<&str>) -> bool {
    false
}
