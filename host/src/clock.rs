//! Broker's notion of "now", for JWT `iat`/`exp` and event timestamps. It is the local clock plus an
//! offset, so that a network-time source can correct it without touching the callers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct Clock {
    /// Milliseconds to add to the local clock.
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn set_offset_ms(&self, offset: i64) {
        self.offset_ms.store(offset, Ordering::Relaxed);
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> u64 {
        let local = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let local = i64::try_from(local).unwrap_or(i64::MAX);
        u64::try_from(local.saturating_add(self.offset_ms.load(Ordering::Relaxed))).unwrap_or(0)
    }

    /// Seconds since the Unix epoch.
    pub fn now_secs(&self) -> u64 {
        self.now_millis() / 1000
    }
}
