//! `GET /openapi.json`: the OpenAPI 3.1 document of the whole API, embedded at build time. The
//! end-to-end tests send a request to every operation it lists and check the answer against it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::Body;

const DOCUMENT: &str = include_str!("openapi.json");

/// The document, as `application/json`.
pub fn document() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(DOCUMENT.as_bytes())).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_json() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1."));
        assert!(
            document["paths"]
                .as_object()
                .is_some_and(|paths| !paths.is_empty())
        );
    }
}
