//! Two-factor set-up and password resets: `/create_qr` (the otpauth QR code of a user's login
//! secret), `/create_totp` (a one-time reset code) and `/password_reset`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::body::read_json;
use super::state::AppState;
use super::users::{AdminAndUser, check_admin, check_new_password, existing_user, user_not_found};
use super::{Body, client_address, json_response, served_to};
use crate::accounts;
use crate::auth::totp;
use crate::error::ApiError;
use crate::model::PasswordReset;
use crate::model::User;

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
    let user = existing_user(state, &body.username).await?;
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
    let reset = PasswordReset {
        secret: totp::new_secret(),
        issued_at: state.clock.now_secs(),
    };
    let code = totp::reset_code(&reset.secret, state.config.totp_duration, reset.issued_at)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("generating a reset code: {e}")))?;
    let updated = state
        .users
        .update(&body.username, move |user| user.reset = Some(reset.clone()));
    updated.await?.ok_or_else(user_not_found)?;
    Ok(json_response(StatusCode::OK, &json!({ "totp": code })))
}

#[derive(Deserialize)]
struct PasswordResetBody {
    totp: String,
    username: String,
    password: String,
}

fn reset_is_valid(reset: Option<&PasswordReset>, state: &AppState, code: &str) -> bool {
    let duration = state.config.totp_duration;
    reset.is_some_and(|reset| {
        state.clock.now_secs() < reset.issued_at.saturating_add(duration)
            && totp::reset_code_matches(&reset.secret, duration, reset.issued_at, code)
    })
}

pub async fn password_reset(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body: PasswordResetBody = read_json(state.body_timeout(), request).await?;
    check_new_password(state, &body.password, &body.username)?;
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
    if !reset_is_valid(user.reset.as_ref(), state, &body.totp) {
        return Err(refused());
    }
    let hash = state.passwords.hash(body.password).await?;
    // Checked again in the compare-and-set update, and consumed: a code works once.
    let (code, checker) = (body.totp, state.clone());
    let consume = Box::new(move |user: &mut User| {
        let valid = reset_is_valid(user.reset.as_ref(), &checker, &code);
        if valid {
            accounts::set_password(user, &hash);
            user.reset = None;
        }
        valid
    });
    state
        .users
        .update_if(&body.username, consume)
        .await?
        .ok_or_else(refused)?;
    attempt.succeeded();
    tracing::info!(username = body.username, "password reset");
    Ok(served_to(
        json_response(StatusCode::OK, &json!({"status": "ok"})),
        &body.username,
    ))
}
