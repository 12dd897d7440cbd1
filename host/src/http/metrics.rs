//! The metrics listener (`--metrics_port`) and its one route, `GET /metrics`. It is a listener of its
//! own so that the metrics are never exposed on the public port by accident.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{Body, json_response};
use crate::metrics::{CONTENT_TYPE, metrics};

/// Answers one request on the metrics listener.
pub fn answer<B>(request: &Request<B>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(metrics().render())).boxed_unsync());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        (_, "/metrics") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method not allowed"}),
        ),
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}
