//! Names as NATS subject tokens and key-value keys. Tenant and event names may hold any character the
//! API allows (dots, spaces, `*`, `>`, unicode), and NATS gives dots and wildcards meaning, so each
//! name is base64url-encoded (no padding): its alphabet `[A-Za-z0-9_-]` is plain in subjects and
//! keys, and no name can reach another tenant's subjects.
//!
//! An event's subject is `broker.ev.<tenant>.<part>.<part>…`, one token per dot-separated part of
//! its name (`NameTokens::PerPart`), so that a filter `room.42.*` is the subject filter
//! `broker.ev.<tenant>.<room>.<42>.>` and nats-server finds its events by its own subject index. An
//! empty part (`a..b`, `a.`) is the token `=`, which no encoded part can be. Streams made before
//! hold a dotted name as one token (`NameTokens::Whole`); a name without a dot is one token either way.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::filter::EventFilter;

/// Every event subject starts with this; the stream captures `broker.ev.>`.
pub const EVENTS_PREFIX: &str = "broker.ev";
/// The token of an empty part of an event name: `=` is base64's padding, never in an encoded part.
const EMPTY_PART: &str = "=";

/// A name as one subject token or key.
pub fn token(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name.as_bytes())
}

/// The name a token was made from, if it is one.
pub fn name(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()
}

/// How a stream makes an event name into subject tokens (kept in its metadata, see `cluster`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameTokens {
    /// One token per dot-separated part: a filter's prefix of whole parts is a subject filter.
    PerPart,
    /// The whole name as one token, as streams made before `PerPart` hold names with dots.
    Whole,
}

impl NameTokens {
    /// The subject of `tenant`'s events named `event`.
    pub fn event_subject(self, tenant: &str, event: &str) -> String {
        let mut subject = format!("{EVENTS_PREFIX}.{}", token(tenant));
        match self {
            Self::Whole => push_token(&mut subject, &token(event)),
            Self::PerPart => event.split('.').for_each(|part| push_part(&mut subject, part)),
        }
        subject
    }

    /// The subject filters that together hold every event of `tenant` that `filter` lets through,
    /// none overlapping another (nats-server refuses overlapping filters): an exact name is its
    /// subject; a prefix is the subjects under its whole parts (`room.4*` is `…<room>.>`), or the
    /// tenant's with `Whole` or without a whole part. They may hold more than `filter` lets through;
    /// none for a filter that lets nothing through.
    pub fn filter_subjects(self, tenant: &str, filter: &EventFilter) -> Vec<String> {
        if filter.is_everything() {
            return vec![tenant_subjects(tenant)];
        }
        let (exact, prefixes) = filter.items();
        let mut subjects: Vec<String> = exact.map(|name| self.event_subject(tenant, name)).collect();
        for prefix in prefixes {
            match (self, prefix.rsplit_once('.')) {
                (Self::PerPart, Some((whole_parts, _))) => {
                    let mut subject = self.event_subject(tenant, whole_parts);
                    subject.push_str(".>");
                    subjects.push(subject);
                }
                _ => return vec![tenant_subjects(tenant)],
            }
        }
        subjects.sort_unstable();
        subjects.dedup();
        // A filter `P.>` covers every other subject that starts with `P.`.
        let under: Vec<String> = subjects
            .iter()
            .filter_map(|subject| subject.strip_suffix('>').map(str::to_owned))
            .collect();
        subjects.retain(|subject| {
            !under.iter().any(|under| {
                subject
                    .strip_prefix(under.as_str())
                    .is_some_and(|rest| rest != ">")
            })
        });
        subjects
    }
}

fn push_token(subject: &mut String, token: &str) {
    subject.push('.');
    subject.push_str(token);
}

fn push_part(subject: &mut String, part: &str) {
    if part.is_empty() {
        push_token(subject, EMPTY_PART);
    } else {
        push_token(subject, &token(part));
    }
}

/// The tenant whose event subject `subject` is, if it is one.
pub fn tenant_of(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(EVENTS_PREFIX)?.strip_prefix('.')?;
    let (tenant, event) = rest.split_once('.')?;
    (!event.is_empty()).then_some(())?;
    name(tenant)
}

/// The subjects of all of `tenant`'s events.
pub fn tenant_subjects(tenant: &str) -> String {
    format!("{EVENTS_PREFIX}.{}.>", token(tenant))
}

#[cfg(test)]
mod tests {
    use super::NameTokens::{PerPart, Whole};
    use super::*;

    #[test]
    fn names_with_subject_syntax_stay_inside_their_tokens() {
        for tenant in ["a.b", "*", ">", "a b", "ünï", "t.*.>"] {
            for (tokens, event) in [(PerPart, "x.y.*.>"), (Whole, "x.y.*.>")] {
                let subject = tokens.event_subject(tenant, event);
                let parts: Vec<&str> = subject.split('.').collect();
                assert_eq!(parts.len(), if tokens == PerPart { 7 } else { 4 }, "{subject}");
                assert!(!subject.contains(['*', '>', ' ']), "{subject}");
                assert_eq!(name(parts[2]).as_deref(), Some(tenant));
                assert_eq!(tenant_of(&subject).as_deref(), Some(tenant));
            }
        }
    }

    #[test]
    fn empty_parts_are_tokens_of_their_own() {
        let subject = PerPart.event_subject("t", ".a..");
        let tokens: Vec<&str> = subject.split('.').skip(3).collect();
        assert_eq!(tokens, ["=", &token("a"), "=", "="]);
        assert_ne!(subject, PerPart.event_subject("t", ".a."));
    }

    #[test]
    fn a_name_without_a_dot_has_the_same_subject_either_way() {
        assert_eq!(
            PerPart.event_subject("t", "profile"),
            Whole.event_subject("t", "profile")
        );
    }

    /// NATS's matching of a filter (`*` one token, a final `>` one or more) against a subject.
    fn matches(filter: &str, subject: &str) -> bool {
        let (filter, subject): (Vec<_>, Vec<_>) = (filter.split('.').collect(), subject.split('.').collect());
        if filter.last() == Some(&">") {
            let under = filter.len() - 1;
            return subject.len() > under
                && filter[..under]
                    .iter()
                    .zip(&subject)
                    .all(|(f, s)| *f == "*" || f == s);
        }
        filter.len() == subject.len() && filter.iter().zip(&subject).all(|(f, s)| *f == "*" || f == s)
    }

    #[test]
    fn a_tenant_filter_matches_exactly_that_tenants_events() {
        assert!(matches(&tenant_subjects("a"), &PerPart.event_subject("a", "e.f")));
        assert!(matches(&tenant_subjects("a"), &Whole.event_subject("a", "e.f")));
        assert!(!matches(&tenant_subjects("a"), &PerPart.event_subject("ab", "e")));
        assert!(!matches(
            &tenant_subjects("a.b"),
            &PerPart.event_subject("a", "b")
        ));
        assert!(!matches(&tenant_subjects("*"), &PerPart.event_subject("x", "e")));
    }

    const NAMES: [&str; 12] = [
        "a",
        "ab",
        "a.b",
        "a.bc",
        "a.b.c",
        "a..b",
        "a.",
        ".a",
        "b.a",
        "a.b.",
        "room.42.x",
        "room.4",
    ];

    /// Every filter's subjects hold every name it lets through, and with whole parts nothing more.
    #[test]
    fn filter_subjects_hold_what_the_filter_lets_through() {
        for text in [
            "a.*",
            "a.b*",
            "a.b.*",
            "a..*",
            ".*",
            "a*",
            "a.b",
            "a..b,a.*",
            "room.4*",
            "room.42.*,a",
            "*",
        ] {
            let filter = EventFilter::parse(text).unwrap();
            for tokens in [PerPart, Whole] {
                let subjects = tokens.filter_subjects("t", &filter);
                for name in NAMES {
                    let subject = tokens.event_subject("t", name);
                    let held = subjects.iter().any(|filter| matches(filter, &subject));
                    assert!(
                        !filter.matches(name) || held,
                        "{text} {tokens:?}: {name} not in {subjects:?}"
                    );
                    let whole_parts = !text.contains(',') && (text.ends_with(".*") || !text.contains('*'));
                    if tokens == PerPart && whole_parts {
                        assert_eq!(held, filter.matches(name), "{text}: {name} in {subjects:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn filter_subjects_never_overlap() {
        let filter = EventFilter::parse("a.*,a.b,a.b.*,a.b.c,c,c").unwrap();
        assert_eq!(
            PerPart.filter_subjects("t", &filter),
            [
                PerPart.event_subject("t", "a") + ".>",
                PerPart.event_subject("t", "c")
            ]
        );
        let filter = EventFilter::parse("a*,b").unwrap();
        assert_eq!(PerPart.filter_subjects("t", &filter), [tenant_subjects("t")]);
        assert_eq!(
            Whole.filter_subjects("t", &EventFilter::parse("a.*").unwrap()),
            [tenant_subjects("t")]
        );
        assert!(
            PerPart
                .filter_subjects("t", &EventFilter::default().narrowed_to([]))
                .is_empty()
        );
    }
}
