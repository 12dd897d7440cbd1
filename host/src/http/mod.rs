//! The HTTP layer: routing, body parsing, JSON answers, CORS and the per-request log line. Handlers
//! parse and map results; the work is done by the library calls they invoke.

mod admin;
mod body;
mod console;
mod events;
mod history;
pub mod metrics;
mod openapi;
pub mod redirect;
mod session;
mod sse;
pub mod state;
mod two_factor;
mod users;
mod webhooks;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use self::state::AppState;
use crate::error::ApiError;
use crate::metrics::metrics;

/// Response bodies need not be `Sync`: hyper polls each from one task at a time.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The address of the client that sent a request, put in its extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// The client's IP address (unspecified when the request came without one, as in a unit test).
fn client_address<B>(request: &Request<B>) -> IpAddr {
    request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |client| client.0.ip())
}

/// Who sent `request` (JWT or Basic), or why not.
async fn caller<B>(state: &AppState, request: &Request<B>) -> Result<crate::auth::Identity, ApiError> {
    let identity = state
        .auth
        .authenticate(request.headers(), client_address(request))
        .await?;
    Ok(identity)
}

/// The username a handler served, carried in the response extensions up to the log line.
#[derive(Clone)]
struct LoggedUser(String);

/// Serves one request: route, answer, add CORS headers, log one line.
pub async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // Looked up once: it serves the request and names it in the metrics.
    let found = ROUTES.iter().find(|route| route.path == path);
    let mut response = match route(&state, found, request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    };
    add_cors_headers(&state.config.origin, &mut response);
    // Any other path is `other`: unbounded paths must not become unbounded label values.
    let label = found.map_or("other", |route| route.path);
    metrics().request(label, response.status().as_u16());
    let user = response.extensions_mut().remove::<LoggedUser>();
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = format_args!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
        user = user.as_ref().map_or("-", |u| u.0.as_str()),
        "request"
    );
    response
}

async fn route(
    state: &Arc<AppState>,
    found: Option<&'static Route>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if request.method() == Method::OPTIONS {
        return Ok(preflight());
    }
    let Some(route) = found else {
        return Err(ApiError::NotFound);
    };
    if matches!(route.handler, Handler::Console) && !state.config.console {
        return Err(ApiError::NotFound);
    }
    let method = request.method().as_str();
    if !route.methods.split(", ").any(|allowed| allowed == method) {
        return Err(ApiError::MethodNotAllowed(route.methods));
    }
    match route.handler {
        Handler::Root if request.method() == Method::HEAD => Ok(empty(StatusCode::OK)),
        Handler::Root => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        Handler::CreateUser => users::create_user(state, request).await,
        Handler::ListUsers => users::list_users(state, request).await,
        Handler::GetUser => users::get_user(state, request).await,
        Handler::UpdateUser => users::update_user(state, request).await,
        Handler::Revoke => users::set_revoked(state, request, true).await,
        Handler::Unrevoke => users::set_revoked(state, request, false).await,
        Handler::DeleteUser => users::delete_user(state, request).await,
        Handler::DeleteTenant => users::delete_tenant(state, request).await,
        Handler::Login => session::login(state, request).await,
        Handler::CreateQr => two_factor::create_qr(state, request).await,
        Handler::CreateTotp => two_factor::create_totp(state, request).await,
        Handler::PasswordReset => two_factor::password_reset(state, request).await,
        Handler::Verify => session::verify(state, request).await,
        Handler::Insert => events::insert(state, request).await,
        Handler::Subscribe => sse::subscribe(state, request).await,
        Handler::History => history::page(state, request).await,
        Handler::Presence => sse::presence(state, &request).await,
        Handler::OpenApi => Ok(openapi::document()),
        Handler::AdminGuests => admin::guests(state, &request),
        Handler::AdminStream => admin::tenant_stream(state, &request).await,
        Handler::AdminHistory => admin::tenant_history(state, &request).await,
        Handler::AdminInsert => admin::insert(state, request).await,
        Handler::TenantLimits if request.method() == Method::POST => {
            admin::set_tenant_limits(state, request).await
        }
        Handler::TenantLimits => admin::tenant_limits(state, &request).await,
        Handler::Webhooks if request.method() == Method::POST => webhooks::register(state, request).await,
        Handler::Webhooks => webhooks::list(state, &request).await,
        Handler::UpdateWebhook => webhooks::update(state, request).await,
        Handler::DeleteWebhook => webhooks::delete(state, request).await,
        Handler::ResumeWebhook => webhooks::resume(state, request).await,
        Handler::Console => console::file(route.path).ok_or(ApiError::NotFound),
    }
}

/// What serves a route (see `ROUTES`).
#[derive(Clone, Copy)]
enum Handler {
    Root,
    CreateUser,
    ListUsers,
    GetUser,
    UpdateUser,
    Revoke,
    Unrevoke,
    DeleteUser,
    DeleteTenant,
    Login,
    CreateQr,
    CreateTotp,
    PasswordReset,
    Verify,
    Insert,
    Subscribe,
    Presence,
    History,
    OpenApi,
    AdminGuests,
    AdminStream,
    AdminHistory,
    AdminInsert,
    TenantLimits,
    Webhooks,
    UpdateWebhook,
    DeleteWebhook,
    ResumeWebhook,
    Console,
}

/// One route: its path (also its metric label), the methods it answers (the `Allow` header of a
/// 405; OPTIONS, the CORS preflight, is answered on every path), and what serves it.
struct Route {
    path: &'static str,
    methods: &'static str,
    handler: Handler,
}

const fn at(path: &'static str, methods: &'static str, handler: Handler) -> Route {
    Route {
        path,
        methods,
        handler,
    }
}

const GET: &str = "GET, OPTIONS";
const POST: &str = "POST, OPTIONS";
const GET_POST: &str = "GET, POST, OPTIONS";

/// Every route Broker serves, each written once. Any other path is 404, and its metric label is
/// `other`.
static ROUTES: [Route; 32] = [
    at("/", "GET, HEAD, OPTIONS", Handler::Root),
    at("/create_user", POST, Handler::CreateUser),
    at("/list_users", POST, Handler::ListUsers),
    at("/get_user", POST, Handler::GetUser),
    at("/update_user", POST, Handler::UpdateUser),
    at("/revoke_user", POST, Handler::Revoke),
    at("/unrevoke_user", POST, Handler::Unrevoke),
    at("/delete_user", POST, Handler::DeleteUser),
    at("/delete_tenant", POST, Handler::DeleteTenant),
    at("/login", POST, Handler::Login),
    at("/create_qr", POST, Handler::CreateQr),
    at("/create_totp", POST, Handler::CreateTotp),
    at("/password_reset", POST, Handler::PasswordReset),
    at("/verify", GET, Handler::Verify),
    at("/insert", POST, Handler::Insert),
    at("/sse", GET, Handler::Subscribe),
    at("/events", GET, Handler::History),
    at("/presence", GET, Handler::Presence),
    at("/openapi.json", GET, Handler::OpenApi),
    at("/admin/guests", GET, Handler::AdminGuests),
    at("/admin/sse", GET, Handler::AdminStream),
    at("/admin/events", GET, Handler::AdminHistory),
    at("/admin/insert", POST, Handler::AdminInsert),
    at("/admin/tenant_limits", GET_POST, Handler::TenantLimits),
    at("/admin/webhooks", GET_POST, Handler::Webhooks),
    at("/admin/webhooks/update", POST, Handler::UpdateWebhook),
    at("/admin/webhooks/delete", POST, Handler::DeleteWebhook),
    at("/admin/webhooks/resume", POST, Handler::ResumeWebhook),
    at("/console", GET, Handler::Console),
    at("/console/", GET, Handler::Console),
    at("/console/app.js", GET, Handler::Console),
    at("/console/style.css", GET, Handler::Console),
];

/// The decoded value of `key` in a query string.
pub(super) fn query_value(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.into_owned())
}

pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().boxed_unsync());
    *response.status_mut() = status;
    response
}

/// Marks `response` as served to `username`, for the request log.
fn served_to(mut response: Response<Body>, username: &str) -> Response<Body> {
    response.extensions_mut().insert(LoggedUser(username.to_owned()));
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    match error {
        ApiError::Internal(source) => tracing::error!(error = format!("{source:#}"), "internal error"),
        ApiError::Guest(message) => tracing::warn!(message, "guest failure"),
        _ => {}
    }
    let mut body = json!({ "error": error.to_string() });
    if let ApiError::Limited(limited) = error {
        body["limit"] = limited.limit.name().into();
    }
    let mut response = json_response(error.status(), &body);
    if let ApiError::MethodNotAllowed(allow) = error {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if matches!(error, ApiError::BasicChallenge(_)) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="broker", charset="UTF-8""#),
        );
    }
    if matches!(error, ApiError::Overloaded(_)) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let ApiError::Limited(limited) = error
        && !limited.retry_after.is_zero()
    {
        let seconds = crate::limits::retry_after_secs(limited.retry_after);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if matches!(error, ApiError::PayloadTooLarge(_) | ApiError::RequestTimeout) {
        // The rest of the body was never read: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn preflight() -> Response<Body> {
    let mut response = empty(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, last-event-id, x-admin-token"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

fn add_cors_headers(origin: &str, response: &mut Response<Body>) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    if origin != "*" {
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_value("tenant=a%2Eb%20c&x=1", "tenant").as_deref(),
            Some("a.b c")
        );
        assert_eq!(query_value("x=1&tenant=%C3%BC", "tenant").as_deref(), Some("ü"));
        assert_eq!(query_value("tenantx=1", "tenant"), None);
    }
}
