//! A test guest, not an example: its behaviour is chosen by the event name, so one component can
//! exercise every sandbox limit. Broker's tests install it for a tenant and send it commands.

wit_bindgen::generate!({ path: "../../../wit", world: "validator" });

struct Hostile;

/// The tenant of the call this instance served last: a warm instance shared between tenants
/// would show another tenant here.
static LAST_TENANT: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Calls this instance has served ("count-slowly" counts them).
static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Guest for Hostile {
    fn validate(event: Event) -> Verdict {
        match event.name.as_str() {
            "loop" => loop {
                std::hint::black_box(&event);
            },
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1; 1 << 20]));
                }
            }
            // Asks for more memory than the cap, survives the refusal, and accepts.
            "try-alloc" => {
                let mut big: Vec<u8> = Vec::new();
                match big.try_reserve(64 << 20) {
                    Ok(()) => Verdict::Reject("64 MiB should exceed the test's memory cap".into()),
                    Err(_) => Verdict::Accept,
                }
            }
            "trap" => panic!("the hostile guest panics on purpose"),
            "bad-json" => Verdict::Replace("{not json".into()),
            "reject" => Verdict::Reject(format!("no thanks: {}", event.data)),
            "replace" => Verdict::Replace(format!("{{\"wrapped\":{}}}", event.data)),
            // Reads state past the per-call bound: the host must void the verdict.
            "read-flood" => {
                for _ in 0..100 {
                    std::hint::black_box(broker::guest::state::latest("read-flood"));
                }
                Verdict::Accept
            }
            // Reads the newest "big" event four times: past 1 MiB of answers when it is large.
            "read-big" => {
                for _ in 0..4 {
                    std::hint::black_box(broker::guest::state::latest("big"));
                }
                Verdict::Accept
            }
            "log-flood" => {
                for i in 0..10_000 {
                    broker::guest::log::log(broker::guest::log::Level::Warn, &format!("flood {i}"));
                }
                Verdict::Accept
            }
            // Waits on the host (a WASI sleep): epoch ticks never fire, so only a wall-clock bound
            // ends it.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Verdict::Accept
            }
            // Creates host resources and never drops them: without a cap on the instance's
            // resource table each would take host memory.
            "leak-handles" => {
                for _ in 0..5_000 {
                    std::mem::forget(wasip2::clocks::monotonic_clock::subscribe_duration(1));
                }
                Verdict::Accept
            }
            // Reads state, then waits on the host for 100 ms before accepting: any insert of
            // `counter` committed meanwhile makes the read stale, so the insert is judged again.
            "read-slowly" => {
                let _ = broker::guest::state::latest("counter");
                std::thread::sleep(std::time::Duration::from_millis(100));
                Verdict::Accept
            }
            // The same with reads of two names: the host checks them together at commit (against
            // the whole stream in a cluster), so a write to either makes the read stale.
            "read-two-slowly" => {
                let _ = broker::guest::state::latest("counter");
                let _ = broker::guest::state::latest("other");
                std::thread::sleep(std::time::Duration::from_millis(100));
                Verdict::Accept
            }
            // Text with a newline and an escape sequence, far past the host's bounds.
            "reject-long" => Verdict::Reject(format!("line one\nline two\u{1b}[31m{}", "z".repeat(3000))),
            "log-long" => {
                let line = format!("long\nforged line\u{1b}[31m{}", "w".repeat(2000));
                broker::guest::log::log(broker::guest::log::Level::Warn, &line);
                Verdict::Accept
            }
            // This instance's call count.
            "count" => {
                let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Verdict::Replace(format!("{{\"calls\":{calls}}}"))
            }
            // This instance's call count, after waiting 200 ms so that concurrent calls overlap.
            "count-slowly" => {
                let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
                Verdict::Replace(format!("{{\"calls\":{calls}}}"))
            }
            // Which tenant this instance served before: "" for a fresh instance.
            "last-tenant" => {
                let mut last = LAST_TENANT.lock().unwrap();
                let previous = std::mem::replace(&mut *last, event.tenant.clone());
                Verdict::Replace(format!("{{\"previous\":\"{previous}\"}}"))
            }
            // What the guest sees of the world: both clocks and a random number.
            "world" => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis());
                let monotonic = wasip2::clocks::monotonic_clock::now();
                let random = wasip2::random::random::get_random_u64();
                Verdict::Replace(format!(
                    "{{\"wall_ms\":{wall},\"monotonic_ns\":{monotonic},\"random\":\"{random}\"}}"
                ))
            }
            _ => Verdict::Accept,
        }
    }
}

export!(Hostile);
