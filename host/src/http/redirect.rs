//! The plain-HTTP port under `--secure=true`: every request is answered with a redirect to the same
//! path over HTTPS and nothing else, so no credentials or events travel in clear text. 308 (not 301)
//! so that a client re-sends a POST as a POST.

use std::str::FromStr;

use hyper::header::{self, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{Body, json_response};

/// Where plain-HTTP requests are sent.
#[derive(Debug, Clone)]
pub struct HttpsRedirect {
    /// Used when the request names no valid host.
    pub fallback_host: String,
    pub tls_port: u16,
}

impl HttpsRedirect {
    pub fn answer<B>(&self, request: &Request<B>) -> Response<Body> {
        let location = self.location(request);
        tracing::info!(method = %request.method(), path = request.uri().path(), location, "plain HTTP redirected to HTTPS");
        let mut response = json_response(
            StatusCode::PERMANENT_REDIRECT,
            &json!({ "error": format!("this port only redirects: use {location}") }),
        );
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }

    fn location<B>(&self, request: &Request<B>) -> String {
        let named = request.uri().authority().cloned().or_else(|| {
            let host = request.headers().get(header::HOST)?.to_str().ok()?;
            Authority::from_str(host).ok()
        });
        let host = named
            .as_ref()
            .map_or(self.fallback_host.as_str(), Authority::host);
        let port = match self.tls_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        format!("https://{host}{port}{path}")
    }
}
