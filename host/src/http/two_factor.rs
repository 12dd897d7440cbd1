//! Two-factor set-up and password resets: `/create_qr` (the otpauth QR code of a user's login
//! secret), `/create_totp` (a one-time reset code) and `/password_reset`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::body::read_json;
use super::state::AppState;
use super::users::{AdminAndUser, check_admin};
use super::{Body, client_address, json_response, served_to};
use crate::auth::totp;
use crate::error::ApiError;

#[derive(Deserialize)]
struct CreateQr {
    admin_token: String,
    username: String,
    issuer: String,
}

/// Longest QR issuer name, in bytes.
const MAX_ISSUER_BYTES: usize = 200;

pub async fn create_qr(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: CreateQr = read_json(state.body_timeout(), request).await?;
    check_admin(state, client, &body.admin_token)?;
    // The issuer goes into the QR code's URL: past ~1 KiB the code cannot hold it.
    if body.issuer.is_empty() || body.issuer.contains(':') || body.issuer.len() > MAX_ISSUER_BYTES {
        return Err(ApiError::bad_request(format!(
            "issuer must be 1 to {MAX_ISSUER_BYTES} bytes and contain no ':'"
        )));
    }
    let user = state.accounts.existing(&body.username).await?;
    let secret = user
        .totp_secret
        .filter(|_| user.two_factor)
        .ok_or_else(|| ApiError::bad_request("two_factor is not enabled for this user"))?;
    let qr = totp::qr_base64(&secret, &body.issuer, &user.username)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("rendering a QR code: {e}")))?;
    Ok(json_response(StatusCode::OK, &json!({ "qr": qr })))
}

/// Issues a reset code valid for `--totp_duration` seconds; a new one replaces the previous one.
pub async fn create_totp(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: AdminAndUser = read_json(state.body_timeout(), request).await?;
    check_admin(state, client, &body.admin_token)?;
    let code = state.accounts.issue_reset_code(&body.username).await?;
    Ok(json_response(StatusCode::OK, &json!({ "totp": code })))
}

#[derive(Deserialize)]
struct PasswordResetBody {
    totp: String,
    username: String,
    password: String,
}

pub async fn password_reset(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body: PasswordResetBody = read_json(state.body_timeout(), request).await?;
    state
        .accounts
        .check_new_password(&body.password, &body.username)?;
    let refused = || ApiError::unauthorized("totp is invalid or expired");
    // Counted before the user is read and the code checked: concurrent wrong codes cannot all
    // pass the limit while the read is in flight.
    let attempt = state
        .reset_codes
        .reserve(&body.username)
        .ok_or(ApiError::TooManyAttempts)?;
    let Some(user) = state.users.get(&body.username).await? else {
        // Made-up names are given back, so that they cannot crowd real ones out of the limiter.
        attempt.give_back();
        return Err(refused());
    };
    if !state.accounts.reset_code_matches(&user, &body.totp) {
        return Err(refused());
    }
    // Consumed in the compare-and-set: a code works once.
    let reset = state
        .accounts
        .reset_password(&body.username, body.totp, body.password)
        .await?;
    if !reset {
        return Err(refused());
    }
    attempt.succeeded();
    Ok(served_to(
        json_response(StatusCode::OK, &json!({"status": "ok"})),
        &body.username,
    ))
}
