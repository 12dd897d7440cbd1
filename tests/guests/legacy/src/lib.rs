//! A test guest built against the frozen 0.1.0 WIT (before `state` existed): it imports
//! `broker:guest/log@0.1.0` and wraps the data, so a test sees it loaded and ran on today's host.

wit_bindgen::generate!({ path: "wit", world: "validator" });

struct Legacy;

impl Guest for Legacy {
    fn validate(event: Event) -> Verdict {
        broker::guest::log::log(broker::guest::log::Level::Info, "legacy guest called");
        Verdict::Replace(format!("{{\"legacy\":{}}}", event.data))
    }
}

export!(Legacy);
