//! `GET /console`: the admin console, one page of plain HTML, CSS and an ES module, embedded in the
//! binary (no Node needed to run Broker). `--console=false` turns it off. The page holds no power
//! of its own: it calls the admin API with the token the operator types, kept in `sessionStorage`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::Body;

const INDEX: &str = include_str!("console/index.html");
const APP: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/style.css");

/// The console file at `path`, if there is one.
pub fn file(path: &str) -> Option<Response<Body>> {
    let (content, content_type) = match path {
        "/console" | "/console/" => (INDEX, "text/html; charset=utf-8"),
        "/console/app.js" => (APP, "text/javascript; charset=utf-8"),
        "/console/style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(content.as_bytes())).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page runs only its own script and talks only to this server.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}
