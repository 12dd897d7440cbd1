//! Checks on names and fields shared by several endpoints. Each returns the message a client sees.

use crate::storage::MAX_NAME_BYTES;

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

/// Text from a guest (a log line, a rejection message) made safe for a log line or a response: at
/// most `max_bytes`, cut at a character boundary, with control characters (newlines, escape
/// sequences) shown escaped, so a guest cannot forge log lines or terminal output.
pub fn printable(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut shown = String::with_capacity(end);
    for c in text[..end].chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// The prefix of the event names Broker's own frames use (the history horizon, presence): no
/// insert may use it, so a client can tell Broker's frames from its users' events.
pub const RESERVED_EVENT_PREFIX: &str = "broker.";

/// An event name additionally may not start with a space: SSE readers drop one space after
/// `event:`, so subscribers would see another name than the one inserted. Nor may it start with
/// the reserved prefix.
pub fn event_name(value: &str) -> Result<(), String> {
    name("event", value)?;
    if value.starts_with(' ') {
        return Err("event must not start with a space".into());
    }
    if value.starts_with(RESERVED_EVENT_PREFIX) {
        return Err(format!(
            "event names starting with {RESERVED_EVENT_PREFIX:?} are reserved for Broker's own frames"
        ));
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

/// An email address: syntax, and not on mailchecker's list of throwaway domains.
pub fn email(value: &str) -> Result<(), String> {
    if mailchecker::is_valid(value) {
        Ok(())
    } else {
        Err("email is invalid".into())
    }
}

/// With `--password_checker`: zxcvbn must score the password 3 or more (of 4); the refusal says why.
pub fn password_strength(password: &str, username: &str) -> Result<(), String> {
    let estimate = zxcvbn::zxcvbn(password, &[username]);
    if estimate.score() >= zxcvbn::Score::Three {
        return Ok(());
    }
    let mut reasons = Vec::new();
    if let Some(feedback) = estimate.feedback() {
        reasons.extend(feedback.warning().map(|w| w.to_string()));
        reasons.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    if reasons.is_empty() {
        reasons.push("it is easy to guess".into());
    }
    Err(format!("password is too weak because {}", reasons.join(" ")))
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
    fn guest_text_is_cut_and_its_control_characters_escaped() {
        assert_eq!(
            printable("ok\nFAKE LOG\u{1b}[31m", 100),
            "ok\\nFAKE LOG\\u{1b}[31m"
        );
        assert_eq!(printable("héllo", 2), "h", "cut at a character boundary");
    }

    #[test]
    fn scopes_need_exactly_one_colon() {
        let ok = vec!["news:get".to_owned(), "news:post".to_owned()];
        assert!(scopes(&ok).is_ok());
        for bad in ["news", "news:get:x", ":get", "news:"] {
            assert!(scopes(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_need_syntax_and_a_real_domain() {
        assert!(email("bob@example.com").is_ok());
        assert!(email("not an email").is_err());
        assert!(email("bob@mailinator.com").is_err());
    }

    #[test]
    fn weak_passwords_are_refused_with_feedback() {
        let refusal = password_strength("password1", "bob").unwrap_err();
        assert!(refusal.starts_with("password is too weak because "), "{refusal}");
        assert!(password_strength("correct horse battery staple", "bob").is_ok());
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
