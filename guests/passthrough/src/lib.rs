//! Broker's default guest: every event is accepted as it is, which keeps Broker schema-agnostic.
//! It is compiled into the `broker` binary and runs for every tenant without a guest of its own.

wit_bindgen::generate!({ path: "../../wit", world: "validator" });

struct Passthrough;

impl Guest for Passthrough {
    fn validate(_event: Event) -> Verdict {
        Verdict::Accept
    }
}

export!(Passthrough);
