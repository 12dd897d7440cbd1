//! Example guest: for the event names listed in `RULES`, the data must be a JSON object holding each
//! listed field with the listed type. Other event names pass unchanged. Copy it, edit `RULES`,
//! build, and drop the `.wasm` into Broker's guests directory as `<tenant_name>.wasm`.

use serde_json::Value;

wit_bindgen::generate!({ path: "../../wit", world: "validator" });

#[derive(Clone, Copy)]
enum Kind {
    String,
    Number,
    Bool,
    Array,
    Object,
}

impl Kind {
    fn matches(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_string(),
            Kind::Number => value.is_number(),
            Kind::Bool => value.is_boolean(),
            Kind::Array => value.is_array(),
            Kind::Object => value.is_object(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// Event name → required fields and their types.
const RULES: &[(&str, &[(&str, Kind)])] = &[
    ("user", &[("name", Kind::String), ("age", Kind::Number)]),
    ("order", &[("id", Kind::String), ("items", Kind::Array), ("paid", Kind::Bool)]),
    ("settings", &[("preferences", Kind::Object)]),
];

fn check(name: &str, data: &str) -> Result<(), String> {
    let Some((_, fields)) = RULES.iter().find(|(event, _)| *event == name) else {
        return Ok(());
    };
    let data: Value = serde_json::from_str(data).map_err(|e| format!("data is not JSON: {e}"))?;
    let Some(object) = data.as_object() else {
        return Err(format!("data of `{name}` events must be a JSON object"));
    };
    for (field, kind) in *fields {
        match object.get(*field) {
            None => return Err(format!("field `{field}` is required")),
            Some(value) if !kind.matches(value) => {
                return Err(format!("field `{field}` must be {}", kind.name()));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

struct RequireFields;

impl Guest for RequireFields {
    fn validate(event: Event) -> Verdict {
        match check(&event.name, &event.data) {
            Ok(()) => Verdict::Accept,
            Err(message) => Verdict::Reject(message),
        }
    }
}

export!(RequireFields);
