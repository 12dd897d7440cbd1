//! The admin endpoints the console needs beyond the user API, with the admin token in the
//! `X-Admin-Token` header: the guests listing, a live stream of any tenant, pages of any tenant's
//! history, and inserts into any tenant. They go through the same paths and checks as the user API (the guest step included).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::read_json;
use super::history::{page_json, page_request};
use super::sse::{event_stream_response, events_filter, last_event_id, with_presence};
use super::state::AppState;
use super::users::check_admin;
use super::{Body, client_address, json_response, query_value};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::filter::EventFilter;
use crate::limits::Limits;
use crate::limits::overrides::TenantLimits;
use crate::model::User;
use crate::validate;

/// The header that carries the admin token.
pub const ADMIN_TOKEN_HEADER: &str = "x-admin-token";
/// Who the events inserted from the console are from: a name no user can have (usernames hold no
/// colon), so an event's `username` never passes for a user's.
const CONSOLE_USERNAME: &str = "admin:console";

pub(super) fn check_admin_header(state: &AppState, request: &Request<Incoming>) -> Result<(), ApiError> {
    let given = request
        .headers()
        .get(ADMIN_TOKEN_HEADER)
        .and_then(|value| value.to_str().ok());
    check_admin(state, client_address(request), given.unwrap_or_default())
}

/// `GET /admin/guests`: the guest each tenant runs, its counts, and the files refused.
pub fn guests(state: &AppState, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    check_admin_header(state, request)?;
    let listing = serde_json::to_value(state.guests.listing()).map_err(ApiError::internal)?;
    Ok(json_response(StatusCode::OK, &listing))
}

/// An admin read of one tenant: the token checked, then the query, its `tenant` and its `events`
/// filter (400 naming what is wrong).
fn admin_tenant_query<'r>(
    state: &AppState,
    request: &'r Request<Incoming>,
) -> Result<(&'r str, String, EventFilter), ApiError> {
    check_admin_header(state, request)?;
    let query = request.uri().query().unwrap_or_default();
    let tenant = query_value(query, "tenant").ok_or_else(|| ApiError::bad_request("tenant is required"))?;
    validate::name("tenant", &tenant).map_err(ApiError::BadRequest)?;
    let filter = events_filter(Some(query))?;
    Ok((query, tenant, filter))
}

/// `GET /admin/sse?tenant=T`: every event of tenant `T`, as a user of it would receive them.
pub async fn tenant_stream(
    state: &Arc<AppState>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (query, tenant, filter) = admin_tenant_query(state, request)?;
    let resume_after = last_event_id(request.headers(), Some(query));
    let frames = state
        .streams
        .subscribe_tenant(&tenant, filter, resume_after, with_presence(Some(query))?)
        .await?;
    Ok(event_stream_response(frames))
}

/// `GET /admin/events?tenant=T`: a page of tenant `T`'s history, as `GET /events` answers a user
/// of it (every name: the admin holds no scopes to narrow it).
pub async fn tenant_history(
    state: &Arc<AppState>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (query, tenant, filter) = admin_tenant_query(state, request)?;
    let (start, limit) = page_request(Some(query))?;
    let page = state.history.tenant_page(&tenant, &filter, start, limit).await?;
    Ok(json_response(StatusCode::OK, &page_json(&page)))
}

#[derive(Deserialize)]
struct AdminInsert {
    tenant_name: String,
    event: String,
    /// Any JSON, `null` included; the field itself is required.
    data: Value,
}

/// `POST /admin/insert`: an insert into any tenant, through its guest like any other.
pub async fn insert(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    check_admin_header(state, &request)?;
    let headers = request.headers().clone();
    let body: AdminInsert = read_json(state.body_timeout(), request).await?;
    validate::name("tenant_name", &body.tenant_name).map_err(ApiError::BadRequest)?;
    validate::event_name(&body.event).map_err(ApiError::BadRequest)?;
    let max_bytes = state.limits.storage(&body.tenant_name).await?;
    let key = super::events::idempotency_key(&headers, &body.tenant_name, CONSOLE_USERNAME)?;
    let identity = Identity {
        user: console_user(body.tenant_name),
        expiry: 0,
    };
    let event = state
        .inserts
        .insert(&identity, body.event, body.data, key, max_bytes)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": event.id, "seq": event.seq }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetTenantLimits {
    tenant: String,
    /// The whole override: a limit it leaves out takes the flag's value again. An object (serde
    /// would also take a struct as an array of its fields).
    limits: serde_json::Map<String, Value>,
}

/// `GET /admin/tenant_limits[?tenant=T]`: the flags' limits, the requests each limit refused on
/// this node, and with a tenant, its override, the limits in force for it and its open streams.
pub async fn tenant_limits(
    state: &Arc<AppState>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    check_admin_header(state, request)?;
    let refused: serde_json::Map<String, Value> = Limits::refusals()
        .into_iter()
        .map(|(limit, count)| (limit.to_owned(), count.into()))
        .collect();
    let mut answer = json!({
        "defaults": state.limits.defaults().as_fields(),
        "refused": refused,
    });
    if let Some(tenant) = request
        .uri()
        .query()
        .and_then(|query| query_value(query, "tenant"))
    {
        validate::name("tenant", &tenant).map_err(ApiError::BadRequest)?;
        answer["tenant"] = json!({
            "name": tenant,
            "override": state.limits.override_of(&tenant).await,
            "in_force": state.limits.of_tenant(&tenant).await.as_fields(),
            "open_streams": state.limits.open_streams_of(&tenant),
        });
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// `POST /admin/tenant_limits`: replaces a tenant's override; every node uses it within
/// `limits::overrides::REFRESH`.
pub async fn set_tenant_limits(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    check_admin_header(state, &request)?;
    let body: SetTenantLimits = read_json(state.body_timeout(), request).await?;
    validate::name("tenant", &body.tenant).map_err(ApiError::BadRequest)?;
    let limits: TenantLimits = serde_json::from_value(Value::Object(body.limits))
        .map_err(|error| ApiError::BadRequest(format!("limits: {error}")))?;
    limits.check().map_err(ApiError::BadRequest)?;
    if limits.tenant_max_bytes.is_some_and(|max| max > 0) && state.config.nats.is_some() {
        return Err(ApiError::bad_request(
            "tenant_max_bytes is counted on LMDB only; in cluster mode --nats_max_mb bounds the stream",
        ));
    }
    tracing::info!(tenant = body.tenant, ?limits, "tenant limits set");
    state.limits.set_override(&body.tenant, limits).await?;
    let in_force = state.limits.of_tenant(&body.tenant).await.as_fields();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "tenant": body.tenant, "in_force": in_force }),
    ))
}

/// The console, as the inserting user: every scope, in the chosen tenant.
fn console_user(tenant_name: String) -> User {
    User {
        id: uuid::Uuid::nil(),
        username: CONSOLE_USERNAME.to_owned(),
        password_hash: String::new(),
        revoked: false,
        tenant_name,
        email: None,
        scopes: Some(vec!["*:post".to_owned(), "*:get".to_owned()]),
        data: None,
        two_factor: false,
        totp_secret: None,
        last_totp_step: None,
        reset: None,
        revision: 0,
        credential_generation: 0,
    }
}
