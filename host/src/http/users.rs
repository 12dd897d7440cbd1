//! The admin user-management endpoints: create, list, get, update, revoke, unrevoke.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::body::{present, read_json};
use super::state::AppState;
use super::{Body, client_address, json_response};
use crate::accounts;
use crate::auth::{admin, totp};
use crate::error::ApiError;
use crate::model::User;
use crate::validate;

const WRONG_ADMIN_TOKEN: &str = "admin_token is incorrect";

/// Refuses a wrong admin token with 401 (create_user answers 400, as the original did).
pub fn check_admin(state: &AppState, client: IpAddr, given: &str) -> Result<(), ApiError> {
    check_admin_or(state, client, given, ApiError::unauthorized(WRONG_ADMIN_TOKEN))
}

/// Wrong tokens count against the client's address: past `--admin_failures` in a minute, every
/// admin request from it is refused with 429, right token or not, so guessing learns nothing.
fn check_admin_or(state: &AppState, client: IpAddr, given: &str, wrong: ApiError) -> Result<(), ApiError> {
    let right = admin::token_matches(given, &state.config.admin_token);
    match state.admin_tokens.judge(&client.to_string(), right) {
        None => Err(ApiError::TooManyAdminFailures),
        Some(true) => Ok(()),
        Some(false) => Err(wrong),
    }
}

fn ok() -> Response<Body> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// A new password: non-empty, and strong enough when `--password_checker` is on.
pub fn check_new_password(state: &AppState, password: &str, username: &str) -> Result<(), ApiError> {
    validate::password(password).map_err(ApiError::BadRequest)?;
    if state.config.password_checker {
        validate::password_strength(password, username).map_err(ApiError::BadRequest)?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct CreateUser {
    username: String,
    password: String,
    tenant_name: String,
    admin_token: String,
    email: Option<String>,
    data: Option<Value>,
    scopes: Option<Vec<String>>,
    two_factor: Option<bool>,
}

pub async fn create_user(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: CreateUser = read_json(state.body_timeout(), request).await?;
    check_admin_or(
        state,
        client,
        &body.admin_token,
        ApiError::bad_request(WRONG_ADMIN_TOKEN),
    )?;
    validate::username(&body.username).map_err(ApiError::BadRequest)?;
    validate::name("tenant_name", &body.tenant_name).map_err(ApiError::BadRequest)?;
    check_new_password(state, &body.password, &body.username)?;
    if let Some(email) = &body.email {
        validate::email(email).map_err(ApiError::BadRequest)?;
    }
    if let Some(scopes) = &body.scopes {
        validate::scopes(scopes).map_err(ApiError::BadRequest)?;
    }
    if state.users.get(&body.username).await?.is_some() {
        return Err(ApiError::bad_request("username already taken"));
    }
    let two_factor = body.two_factor.unwrap_or(false);
    let user = User {
        id: Uuid::new_v4(),
        username: body.username,
        password_hash: state.passwords.hash(body.password).await?,
        revoked: false,
        tenant_name: body.tenant_name,
        email: body.email,
        scopes: body.scopes,
        data: body.data,
        two_factor,
        totp_secret: two_factor.then(totp::new_secret),
        last_totp_step: None,
        reset: None,
        revision: 0,
        credential_generation: 0,
    };
    let (username, tenant) = (user.username.clone(), user.tenant_name.clone());
    // Checked again by the directory, atomically: two concurrent creates cannot both win.
    if !state.users.create(user).await? {
        return Err(ApiError::bad_request("username already taken"));
    }
    tracing::info!(username, tenant, "user created");
    Ok(ok())
}

#[derive(Deserialize)]
struct AdminOnly {
    admin_token: String,
}

pub async fn list_users(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: AdminOnly = read_json(state.body_timeout(), request).await?;
    check_admin(state, client, &body.admin_token)?;
    let users = state.users.list().await?;
    let views: Vec<Value> = users.iter().map(User::public_view).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(views)))
}

/// The body of admin calls about one user (get, revoke, unrevoke, create_totp).
#[derive(Deserialize)]
pub(super) struct AdminAndUser {
    pub admin_token: String,
    pub username: String,
}

pub fn user_not_found() -> ApiError {
    ApiError::bad_request("user not found")
}

/// The stored user named `username`, or a 400 for an unknown one.
pub async fn existing_user(state: &AppState, username: &str) -> Result<User, ApiError> {
    state.users.get(username).await?.ok_or_else(user_not_found)
}

pub async fn get_user(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: AdminAndUser = read_json(state.body_timeout(), request).await?;
    check_admin(state, client, &body.admin_token)?;
    let user = existing_user(state, &body.username).await?;
    Ok(json_response(StatusCode::OK, &user.public_view()))
}

pub async fn set_revoked(
    state: &Arc<AppState>,
    request: Request<Incoming>,
    revoked: bool,
) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: AdminAndUser = read_json(state.body_timeout(), request).await?;
    check_admin(state, client, &body.admin_token)?;
    let updated = state
        .users
        .update(&body.username, move |user| accounts::set_revoked(user, revoked));
    updated.await?.ok_or_else(user_not_found)?;
    tracing::info!(username = body.username, revoked, "user revocation changed");
    Ok(ok())
}

/// Fields absent from the body are left unchanged; `null` clears email, scopes or data.
#[derive(Deserialize)]
struct UpdateUser {
    admin_token: String,
    username: String,
    tenant_name: Option<String>,
    password: Option<String>,
    #[serde(default, deserialize_with = "present")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    scopes: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Option<Value>>,
    two_factor: Option<bool>,
}

pub async fn update_user(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: UpdateUser = read_json(state.body_timeout(), request).await?;
    check_admin(state, client, &body.admin_token)?;
    if let Some(tenant) = &body.tenant_name {
        validate::name("tenant_name", tenant).map_err(ApiError::BadRequest)?;
    }
    if let Some(Some(scopes)) = &body.scopes {
        validate::scopes(scopes).map_err(ApiError::BadRequest)?;
    }
    if let Some(Some(email)) = &body.email {
        validate::email(email).map_err(ApiError::BadRequest)?;
    }
    let password_hash = match body.password {
        Some(password) => {
            check_new_password(state, &password, &body.username)?;
            Some(state.passwords.hash(password).await?)
        }
        None => None,
    };
    let username = body.username.clone();
    let change = move |user: &mut User| {
        // A new password or tenant ends the JWTs, remembered credentials and open streams (the
        // directory tells them).
        if let Some(tenant) = &body.tenant_name {
            accounts::move_to_tenant(user, tenant);
        }
        if let Some(hash) = &password_hash {
            accounts::set_password(user, hash);
        }
        if let Some(email) = &body.email {
            user.email.clone_from(email);
        }
        if let Some(scopes) = &body.scopes {
            user.scopes.clone_from(scopes);
        }
        if let Some(data) = &body.data {
            user.data.clone_from(data);
        }
        match body.two_factor {
            // Enabling keeps an existing secret, so an app that already scanned it keeps working.
            Some(true) if user.totp_secret.is_none() => user.totp_secret = Some(totp::new_secret()),
            Some(false) => {
                user.totp_secret = None;
                user.last_totp_step = None;
            }
            _ => {}
        }
        if let Some(two_factor) = body.two_factor {
            user.two_factor = two_factor;
        }
    };
    state
        .users
        .update(&username, change)
        .await?
        .ok_or_else(user_not_found)?;
    Ok(ok())
}
