//! The world as a guest sees it through WASI: both clocks read the event's timestamp, and random
//! bytes come from a generator seeded by the event (tenant, user, name, timestamp). A judgement
//! then depends only on the event and the state it reads, so it can be reproduced; and a guest
//! learns nothing of the host's time or entropy. The generator is not secret: a guest must never
//! mint credentials with it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{SeedableRng, TryRng};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// One instance's view of the world, set afresh for each call.
#[derive(Clone, Default)]
pub struct CallWorld {
    /// The current event's timestamp, in milliseconds since the Unix epoch.
    timestamp_ms: Arc<AtomicU64>,
    random: Arc<Mutex<CallRandom>>,
}

#[derive(Default)]
struct CallRandom {
    seed: u64,
    /// Made on the first read of a call: most guests never ask for randomness.
    rng: Option<StdRng>,
}

impl CallWorld {
    /// Installs this world's clocks and randomness into a WASI context.
    pub fn install(&self, wasi: &mut WasiCtxBuilder) {
        wasi.wall_clock(EventClock(self.timestamp_ms.clone()))
            .monotonic_clock(EventClock(self.timestamp_ms.clone()))
            .secure_random(EventRandom(self.random.clone()))
            .insecure_random(EventRandom(self.random.clone()))
            .insecure_random_seed(0);
    }

    /// Sets the clocks to `timestamp_ms` and reseeds randomness from the event.
    pub fn begin_call(&self, tenant: &str, username: &str, name: &str, timestamp_ms: u64) {
        self.timestamp_ms.store(timestamp_ms, Ordering::Relaxed);
        let mut hasher = DefaultHasher::new();
        (tenant, username, name, timestamp_ms).hash(&mut hasher);
        let mut random = self.random.lock().expect("guest random lock");
        random.seed = hasher.finish();
        random.rng = None;
    }
}

/// Both WASI clocks: they stand still at the event's timestamp for the whole call.
struct EventClock(Arc<AtomicU64>);

impl HostWallClock for EventClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

impl HostMonotonicClock for EventClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed).saturating_mul(1_000_000)
    }
}

/// `wasi:random`, from the call's seed.
struct EventRandom(Arc<Mutex<CallRandom>>);

impl EventRandom {
    fn with<T>(&mut self, read: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut random = self.0.lock().expect("guest random lock");
        let seed = random.seed;
        read(random.rng.get_or_insert_with(|| StdRng::seed_from_u64(seed)))
    }
}

impl TryRng for EventRandom {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.with(|rng| rng.try_next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.with(|rng| rng.try_next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.with(|rng| rng.try_fill_bytes(dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(world: &CallWorld) -> [u8; 16] {
        let mut out = [0; 16];
        EventRandom(world.random.clone())
            .try_fill_bytes(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn the_same_event_sees_the_same_clock_and_random_bytes() {
        let (one, two) = (CallWorld::default(), CallWorld::default());
        one.begin_call("t", "ann", "news", 1_700_000_000_123);
        two.begin_call("t", "ann", "news", 1_700_000_000_123);
        let first = bytes(&one);
        assert_eq!(first, bytes(&two));
        one.begin_call("t", "ann", "news", 1_700_000_000_123);
        assert_eq!(bytes(&one), first, "each call starts from its event's seed");
        let clock = EventClock(one.timestamp_ms.clone());
        assert_eq!(
            HostWallClock::now(&clock),
            Duration::from_millis(1_700_000_000_123)
        );
        two.begin_call("t", "ann", "news", 1_700_000_000_124);
        assert_ne!(bytes(&two), first, "another event, other bytes");
        assert_eq!(
            HostWallClock::now(&clock),
            Duration::from_millis(1_700_000_000_123)
        );
    }
}
