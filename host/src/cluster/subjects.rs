//! Names as NATS subject tokens and key-value keys. Tenant and event names may hold any character the
//! API allows (dots, spaces, `*`, `>`, unicode), and NATS gives dots and wildcards meaning, so each
//! name is base64url-encoded (no padding): its alphabet `[A-Za-z0-9_-]` is plain in subjects and
//! keys, and no name can reach another tenant's subjects.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Every event subject starts with this; the stream captures `broker.ev.>`.
pub const EVENTS_PREFIX: &str = "broker.ev";

/// A name as one subject token or key.
pub fn token(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name.as_bytes())
}

/// The name a token was made from, if it is one.
pub fn name(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()
}

/// The subject of `tenant`'s events named `event`.
pub fn event_subject(tenant: &str, event: &str) -> String {
    format!("{EVENTS_PREFIX}.{}.{}", token(tenant), token(event))
}

/// The tenant whose event subject `subject` is, if it is one.
pub fn tenant_of(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(EVENTS_PREFIX)?.strip_prefix('.')?;
    let (tenant, event) = rest.split_once('.')?;
    (!event.contains('.')).then_some(())?;
    name(tenant)
}

/// The subjects of all of `tenant`'s events.
pub fn tenant_subjects(tenant: &str) -> String {
    format!("{EVENTS_PREFIX}.{}.*", token(tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_subject_syntax_stay_inside_one_token() {
        for tenant in ["a.b", "*", ">", "a b", "ünï", "t.*.>"] {
            let subject = event_subject(tenant, "x.y");
            let tokens: Vec<&str> = subject.split('.').collect();
            assert_eq!(tokens.len(), 4, "{subject}");
            assert!(!subject.contains(['*', '>', ' ']), "{subject}");
            assert_eq!(name(tokens[2]).as_deref(), Some(tenant));
            assert_eq!(name(tokens[3]).as_deref(), Some("x.y"));
            assert_eq!(tenant_of(&subject).as_deref(), Some(tenant));
        }
    }

    /// NATS's matching of a filter with `*` wildcards against a subject, token by token.
    fn matches(filter: &str, subject: &str) -> bool {
        let (filter, subject): (Vec<_>, Vec<_>) = (filter.split('.').collect(), subject.split('.').collect());
        filter.len() == subject.len() && filter.iter().zip(&subject).all(|(f, s)| *f == "*" || f == s)
    }

    #[test]
    fn a_tenant_filter_matches_exactly_that_tenants_events() {
        assert!(matches(&tenant_subjects("a"), &event_subject("a", "e.f")));
        assert!(!matches(&tenant_subjects("a"), &event_subject("ab", "e")));
        assert!(!matches(&tenant_subjects("a.b"), &event_subject("a", "b")));
        assert!(!matches(&tenant_subjects("*"), &event_subject("x", "e")));
    }
}
