//! Checks on names and fields shared by several endpoints. Each returns the message a client sees.

use crate::store::MAX_NAME_BYTES;

/// A username, tenant name or event name: non-empty, bounded, no control characters (an event name
/// is written into SSE lines, where a newline would forge fields).
pub fn name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(format!("{field} must be at most {MAX_NAME_BYTES} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

/// A username additionally may not contain ':' (HTTP Basic splits at the first colon).
pub fn username(value: &str) -> Result<(), String> {
    name("username", value)?;
    if value.contains(':') {
        return Err("username must not contain ':'".into());
    }
    Ok(())
}

pub fn password(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("password must not be empty".into());
    }
    Ok(())
}

/// Scopes are `resource:operation`, exactly one colon, both parts non-empty.
pub fn scopes(scopes: &[String]) -> Result<(), String> {
    let valid = |scope: &String| match scope.split_once(':') {
        Some((resource, operation)) => {
            !resource.is_empty() && !operation.is_empty() && !operation.contains(':')
        }
        None => false,
    };
    if scopes.iter().all(valid) {
        Ok(())
    } else {
        Err("scopes are invalid".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_need_exactly_one_colon() {
        let ok = vec!["news:get".to_owned(), "news:post".to_owned()];
        assert!(scopes(&ok).is_ok());
        for bad in ["news", "news:get:x", ":get", "news:"] {
            assert!(scopes(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_refuse_empty_long_and_control_characters() {
        assert!(name("event", "user-created").is_ok());
        assert!(name("event", "").is_err());
        assert!(name("event", "a\nid:9").is_err());
        assert!(name("event", &"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert!(username("bob:x").is_err());
    }
}
