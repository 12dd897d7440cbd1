//! Example guest: optimistic concurrency for collaborative forms. An event's data must be an object
//! with an integer `version`: 1 for the first event of a name, and exactly the latest event's
//! `version` + 1 after that. Of several clients that send the same next version at once, one wins;
//! the others are refused (the host judges them again on the new latest) and can retry.

use serde_json::Value;

wit_bindgen::generate!({ path: "../../wit", world: "validator" });

use broker::guest::state::latest;

struct Versioned;

/// The `version` field of a JSON object, if it has an integer one.
fn version_of(data: &Value) -> Option<u64> {
    data.as_object()?.get("version")?.as_u64()
}

impl Guest for Versioned {
    fn validate(event: Event) -> Verdict {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return Verdict::Reject("data is not JSON".into());
        };
        let Some(version) = version_of(&data) else {
            return Verdict::Reject("data must be an object with an integer `version`".into());
        };
        let expected = match latest(&event.name) {
            None => 1,
            Some(text) => match serde_json::from_str::<Value>(&text).ok().as_ref().and_then(version_of) {
                Some(current) => current + 1,
                // The latest event predates this guest: start counting after it.
                None => 1,
            },
        };
        if version == expected {
            Verdict::Accept
        } else {
            Verdict::Reject(format!(
                "expected version {expected} for `{}`, got {version}",
                event.name
            ))
        }
    }
}

export!(Versioned);
