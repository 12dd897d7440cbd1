//! The HTTP layer: routing, body parsing, JSON answers, CORS and the per-request log line. Handlers
//! parse and map results; the work is done by the library calls they invoke.

mod admin;
mod body;
mod console;
mod events;
pub mod metrics;
mod openapi;
pub mod redirect;
mod session;
mod sse;
mod two_factor;
mod users;

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

use crate::error::ApiError;
use crate::metrics::metrics;
use crate::state::AppState;

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

/// The username a handler served, carried in the response extensions up to the log line.
#[derive(Clone)]
struct LoggedUser(String);

/// Serves one request: route, answer, add CORS headers, log one line.
pub async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = match route(&state, request).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    };
    add_cors_headers(&state.config.origin, &mut response);
    metrics().request(route_label(&path), response.status().as_u16());
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

async fn route(state: &Arc<AppState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    if request.method() == Method::OPTIONS {
        return Ok(preflight());
    }
    let post = request.method() == Method::POST;
    let get = request.method() == Method::GET;
    if let Some(page) = console::file(request.uri().path()) {
        return match (state.config.console, get) {
            (true, true) => Ok(page),
            (true, false) => Err(ApiError::MethodNotAllowed("GET, OPTIONS")),
            (false, _) => Err(ApiError::NotFound),
        };
    }
    match request.uri().path() {
        "/" if get => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        "/" if request.method() == Method::HEAD => Ok(empty(StatusCode::OK)),
        "/create_user" if post => users::create_user(state, request).await,
        "/list_users" if post => users::list_users(state, request).await,
        "/get_user" if post => users::get_user(state, request).await,
        "/update_user" if post => users::update_user(state, request).await,
        "/revoke_user" if post => users::set_revoked(state, request, true).await,
        "/unrevoke_user" if post => users::set_revoked(state, request, false).await,
        "/login" if post => session::login(state, request).await,
        "/create_qr" if post => two_factor::create_qr(state, request).await,
        "/create_totp" if post => two_factor::create_totp(state, request).await,
        "/password_reset" if post => two_factor::password_reset(state, request).await,
        "/verify" if get => session::verify(state, request).await,
        "/insert" if post => events::insert(state, request).await,
        "/sse" if get => sse::subscribe(state, request).await,
        "/openapi.json" if get => Ok(openapi::document()),
        "/admin/guests" if get => admin::guests(state, &request),
        "/admin/sse" if get => admin::tenant_stream(state, &request),
        "/admin/insert" if post => admin::insert(state, request).await,
        path => match allowed_methods(path) {
            Some(allow) => Err(ApiError::MethodNotAllowed(allow)),
            None => Err(ApiError::NotFound),
        },
    }
}

/// The routes Broker serves, as metric labels; anything else is `other` (unbounded paths must not
/// become unbounded label values).
const ROUTES: [&str; 21] = [
    "/admin/guests",
    "/admin/sse",
    "/admin/insert",
    "/console",
    "/console/app.js",
    "/console/style.css",
    "/",
    "/create_user",
    "/list_users",
    "/get_user",
    "/update_user",
    "/revoke_user",
    "/unrevoke_user",
    "/login",
    "/create_qr",
    "/create_totp",
    "/password_reset",
    "/verify",
    "/insert",
    "/sse",
    "/openapi.json",
];

fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|route| **route == path)
        .copied()
        .unwrap_or("other")
}

/// The methods a known route answers, for the `Allow` header of a 405 (OPTIONS, the CORS
/// preflight, is answered on every path).
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/" => Some("GET, HEAD, OPTIONS"),
        "/verify" | "/sse" | "/openapi.json" | "/admin/guests" | "/admin/sse" => Some("GET, OPTIONS"),
        "/admin/insert" => Some("POST, OPTIONS"),
        "/create_user" | "/list_users" | "/get_user" | "/update_user" | "/revoke_user" | "/unrevoke_user"
        | "/login" | "/insert" | "/create_qr" | "/create_totp" | "/password_reset" => Some("POST, OPTIONS"),
        _ => None,
    }
}

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
    let mut response = json_response(error.status(), &json!({ "error": error.to_string() }));
    if let ApiError::MethodNotAllowed(allow) = error {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if matches!(error, ApiError::Overloaded(_)) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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
