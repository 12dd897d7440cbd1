//! Example guest with a read rule: direct messages. An event named `dm.<a>.<b>` is a message between
//! users `a` and `b`: only they may send it (`validate`) and only they receive it, on streams and in
//! history pages (`can-read`). Every other name is open to the tenant, as without a rule. Usernames
//! with a dot cannot take part (their names would not parse), and such messages are refused.

wit_bindgen::generate!({ path: "../../wit", world: "reader" });

/// The two parties of a direct-message name, if `name` is one.
fn parties(name: &str) -> Option<(&str, &str)> {
    let (a, b) = name.strip_prefix("dm.")?.split_once('.')?;
    (!a.is_empty() && !b.is_empty() && !b.contains('.')).then_some((a, b))
}

struct DirectMessages;

impl Guest for DirectMessages {
    fn validate(event: Event) -> Verdict {
        if !event.name.starts_with("dm.") {
            return Verdict::Accept;
        }
        match parties(&event.name) {
            Some((a, b)) if event.username == a || event.username == b => Verdict::Accept,
            Some(_) => Verdict::Reject("only its two parties may send a direct message".into()),
            None => Verdict::Reject("a direct message is named dm.<one party>.<the other>".into()),
        }
    }

    fn can_read(viewer: Viewer, name: String) -> bool {
        match parties(&name) {
            Some((a, b)) => viewer.username == a || viewer.username == b,
            None => !name.starts_with("dm."),
        }
    }
}

export!(DirectMessages);
