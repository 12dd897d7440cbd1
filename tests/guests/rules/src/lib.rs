//! A test guest, not an example: a read rule whose answer is chosen by the event name, so the tests
//! can make it trap, loop, run out of memory or deny. Every insert is accepted.

wit_bindgen::generate!({ path: "../../../wit", world: "reader" });

struct Rules;

impl Guest for Rules {
    fn validate(_event: Event) -> Verdict {
        Verdict::Accept
    }

    fn can_read(viewer: Viewer, name: String) -> bool {
        match name.as_str() {
            "rule.trap" => panic!("the rules guest panics on purpose"),
            "rule.loop" => loop {
                std::hint::black_box(&viewer);
            },
            "rule.alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1; 1 << 20]));
                }
            }
            "rule.deny" => false,
            // Readable with a `vip:get` scope only: the rule sees the viewer's scopes.
            "rule.vip" => viewer.scopes.iter().any(|scope| scope == "vip:get"),
            // Who is online: for vips too.
            "broker.presence" => viewer.scopes.iter().any(|scope| scope == "vip:get"),
            _ => true,
        }
    }
}

export!(Rules);
