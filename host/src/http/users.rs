//! The admin user-management endpoints: create, list, get, update, revoke, unrevoke.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{present, read_json};
use super::state::AppState;
use super::{Body, client_address, json_response};
use crate::accounts::{NewUser, UserUpdate};
use crate::auth::admin;
use crate::error::ApiError;
use crate::model::User;

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
    let new = NewUser {
        username: body.username,
        password: body.password,
        tenant_name: body.tenant_name,
        email: body.email,
        scopes: body.scopes,
        data: body.data,
        two_factor: body.two_factor.unwrap_or(false),
    };
    state.accounts.create(new).await?;
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

pub async fn get_user(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: AdminAndUser = read_json(state.body_timeout(), request).await?;
    check_admin(state, client, &body.admin_token)?;
    let user = state.accounts.existing(&body.username).await?;
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
    state.accounts.set_revoked(&body.username, revoked).await?;
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
    let update = UserUpdate {
        tenant_name: body.tenant_name,
        password: body.password,
        email: body.email,
        scopes: body.scopes,
        data: body.data,
        two_factor: body.two_factor,
    };
    state.accounts.update(&body.username, update).await?;
    Ok(ok())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteUser {
    admin_token: String,
    username: String,
    /// Also erase every event the user inserted.
    #[serde(default)]
    erase_events: bool,
}

/// `POST /delete_user`: the user is gone at once (credentials, streams); with `erase_events`, so
/// is every event it inserted.
pub async fn delete_user(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: DeleteUser = read_json(state.body_timeout(), request).await?;
    check_admin(state, client, &body.admin_token)?;
    let removed = state
        .erasure
        .delete_user(&state.accounts, &body.username, body.erase_events)
        .await?;
    let answer = json!({"status": "ok", "events_erased": removed.events});
    Ok(json_response(StatusCode::OK, &answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteTenant {
    admin_token: String,
    tenant_name: String,
}

/// `POST /delete_tenant`: every user and event of the tenant, its webhooks and its limits override.
pub async fn delete_tenant(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let client = client_address(&request);
    let body: DeleteTenant = read_json(state.body_timeout(), request).await?;
    check_admin(state, client, &body.admin_token)?;
    crate::validate::name("tenant_name", &body.tenant_name).map_err(ApiError::BadRequest)?;
    let tenant = &body.tenant_name;
    // Webhooks first: none may send the tenant's events while they are erased.
    state.webhooks.delete_tenant(tenant).await?;
    let removed = state.erasure.delete_tenant(&state.accounts, tenant).await?;
    state.limits.set_override(tenant, Default::default()).await?;
    let answer = json!({"status": "ok", "users_deleted": removed.users, "events_erased": removed.events});
    Ok(json_response(StatusCode::OK, &answer))
}
