//! Logging in (JWT) and verifying a caller for other services (biscuit).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::body::read_json;
use super::state::AppState;
use super::{Body, client_address, json_response, served_to};
use crate::auth::{AuthError, totp};
use crate::error::ApiError;
use crate::model::User;

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Store(e) => e.into(),
            AuthError::Password(e) => e.into(),
            AuthError::Limited(limited) => limited.into(),
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
    let client = client_address(&request);
    let body: Login = read_json(state.body_timeout(), request).await?;
    let user = state
        .auth
        .verify_password(&body.username, body.password, client)
        .await?;
    if user.two_factor {
        accept_login_code(state, &user, body.totp.as_deref()).await?;
    }
    let jwt = state.auth.issue_jwt(&user).map_err(ApiError::internal)?;
    Ok(served_to(
        json_response(StatusCode::OK, &json!({ "jwt": jwt })),
        &user.username,
    ))
}

pub async fn verify(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let identity = super::caller(state, &request).await?;
    let scopes = identity.user.scope_list();
    let token = state
        .biscuit
        .token_for(&identity.user.username, scopes, identity.expiry)
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

/// Checks a login two-factor code and records its step, so that the same code cannot log in twice.
/// Wrong codes count against the user's attempt window (`auth::attempts`).
async fn accept_login_code(state: &AppState, user: &User, code: Option<&str>) -> Result<(), ApiError> {
    let refused = || ApiError::unauthorized("a valid totp is required for this user");
    let (Some(code), Some(secret)) = (code, user.totp_secret.as_deref()) else {
        return Err(refused());
    };
    // Counted before it is checked: concurrent wrong codes cannot all pass the limit.
    let attempt = state
        .login_codes
        .reserve(&user.username)
        .ok_or(ApiError::TooManyAttempts)?;
    let Some(step) = totp::check_login(secret, code, state.clock.now_secs()) else {
        return Err(refused());
    };
    // Recorded in a compare-and-set: two logins racing with one code, one wins.
    if !state.accounts.use_login_step(&user.username, step).await? {
        return Err(refused());
    }
    attempt.succeeded();
    Ok(())
}
