//! Example guest that transforms: every object key named in `SENSITIVE` (at any depth) has its value
//! replaced by "[redacted]", and object data gains `received_at`, the host's receive time in
//! milliseconds since the Unix epoch. Subscribers and the store only ever see the result.

use serde_json::Value;

wit_bindgen::generate!({ path: "../../wit", world: "validator" });

const SENSITIVE: &[&str] = &["password", "ssn", "card_number"];

fn redact(value: &mut Value) -> usize {
    match value {
        Value::Object(object) => object
            .iter_mut()
            .map(|(key, field)| {
                if SENSITIVE.contains(&key.as_str()) {
                    *field = Value::from("[redacted]");
                    1
                } else {
                    redact(field)
                }
            })
            .sum(),
        Value::Array(items) => items.iter_mut().map(redact).sum(),
        _ => 0,
    }
}

struct Redact;

impl Guest for Redact {
    fn validate(event: Event) -> Verdict {
        let Ok(mut data) = serde_json::from_str::<Value>(&event.data) else {
            return Verdict::Reject("data is not JSON".into());
        };
        let redacted = redact(&mut data);
        if redacted > 0 {
            broker::guest::log::log(broker::guest::log::Level::Info, &format!("redacted {redacted} field(s)"));
        }
        if let Value::Object(object) = &mut data {
            object.insert("received_at".into(), Value::from(event.timestamp));
        }
        Verdict::Replace(data.to_string())
    }
}

export!(Redact);
