//! Reading request bodies: a size limit, then JSON with errors that name the offending field.

use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::Request;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Reads and parses a JSON body. Unknown fields are ignored; wrong types and missing fields are a
/// 400 naming the field; malformed JSON is a 400; a body over the limit is a 413; a body that
/// takes longer than `limit` (`--request_timeout`) to arrive is a 408.
pub async fn read_json<T: DeserializeOwned>(
    limit: Duration,
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    let collecting = Limited::new(request.into_body(), MAX_BODY_BYTES).collect();
    let Ok(collected) = tokio::time::timeout(limit, collecting).await else {
        return Err(ApiError::RequestTimeout);
    };
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
        }
        Err(_) => return Err(ApiError::bad_request("could not read the request body")),
    };
    parse_json(&bytes)
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(without_position(&inner))
        } else {
            ApiError::bad_request(format!("field `{path}`: {}", without_position(&inner)))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// serde_json's message without its " at line L column C" suffix: the field name says where.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    message.strip_suffix(&suffix).unwrap_or(&message).to_owned()
}

/// For optional fields where `null` means "clear" and absence means "leave unchanged":
/// use with `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        #[expect(dead_code, reason = "only parsed")]
        name: String,
        #[serde(default, deserialize_with = "present")]
        email: Option<Option<String>>,
    }

    fn message(result: Result<Sample, ApiError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field_or_the_syntax() {
        assert!(message(parse_json(br#"{"name": 5}"#)).starts_with("field `name`: invalid type"));
        assert_eq!(message(parse_json(b"{}")), "missing field `name`");
        assert!(message(parse_json(b"{\"name\": ")).starts_with("malformed JSON"));
        assert!(message(parse_json(b"{\"name\": \"a\"} x")).starts_with("malformed JSON"));
        assert!(message(parse_json(b"  ")).contains("must be a JSON object"));
    }

    #[test]
    fn absent_null_and_value_are_told_apart() {
        let absent: Sample = parse_json(br#"{"name": "a"}"#).unwrap();
        let null: Sample = parse_json(br#"{"name": "a", "email": null}"#).unwrap();
        let set: Sample = parse_json(br#"{"name": "a", "email": "x@y.z"}"#).unwrap();
        assert_eq!(absent.email, None);
        assert_eq!(null.email, Some(None));
        assert_eq!(set.email, Some(Some("x@y.z".into())));
    }
}
