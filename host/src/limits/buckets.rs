//! Token buckets keyed by a string (a username, a tenant, a client address), on governor's GCRA:
//! one keyed limiter per distinct rate, so that a tenant given more by an override gets buckets of
//! its own size while everyone else shares the default's.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};

/// Keys kept per rate before an early sweep: buckets that refilled are dropped (they hold nothing
/// a fresh bucket would not), so past this only keys active within one refill time remain.
const MAX_KEYS: usize = 100_000;

/// A sustained rate (fractions allowed: 0.1 is one every 10 s) with a burst; a rate of 0 is no
/// limit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// The buckets of one rate share a limiter.
    fn key(self) -> (u64, u32) {
        (self.per_second.to_bits(), self.burst)
    }

    fn quota(self) -> Option<Quota> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return None;
        }
        // One token every this long: between 1 ns and a year, whatever rate was asked for.
        let seconds = (1.0 / self.per_second).clamp(1e-9, 365.0 * 86_400.0);
        let period = Duration::from_secs_f64(seconds);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Some(Quota::with_period(period)?.allow_burst(burst))
    }
}

/// The buckets of one rate, per key.
type Limiter = Arc<DefaultKeyedRateLimiter<String>>;

/// Buckets per key, for any number of rates.
#[derive(Default)]
pub struct Buckets {
    limiters: Mutex<HashMap<(u64, u32), Limiter>>,
    /// When the last early sweep ran (ms since `started`), so that a flood of new keys sweeps at
    /// most once a second.
    last_early_sweep: AtomicU64,
    started: Option<Instant>,
    /// Keys refused lately, until when: what `refusing` answers.
    refused_until: Mutex<HashMap<String, Instant>>,
}

impl Buckets {
    pub fn new() -> Self {
        Self {
            started: Some(Instant::now()),
            ..Self::default()
        }
    }

    /// Takes one token from `key`'s bucket at `rate`; past the burst, how long until the next one.
    pub fn take(&self, key: &str, rate: Rate) -> Result<(), Duration> {
        let Some(quota) = rate.quota() else {
            return Ok(());
        };
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            limiters
                .entry(rate.key())
                .or_insert_with(|| Arc::new(DefaultKeyedRateLimiter::keyed(quota)))
                .clone()
        };
        if limiter.len() > MAX_KEYS {
            self.sweep_early(&limiter);
        }
        let refused = limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()));
        if let Err(wait) = refused {
            let mut refused_until = self.refused_until.lock().unwrap_or_else(|e| e.into_inner());
            if refused_until.len() >= MAX_KEYS {
                let now = Instant::now();
                refused_until.retain(|_, until| *until > now);
            }
            refused_until.insert(key.to_owned(), Instant::now() + wait);
        }
        refused
    }

    /// How long `key` is still refused for, if its last `take` was refused and the wait it was
    /// given has not passed: for what a key may do without a token, but not while it is refused.
    pub fn refusing(&self, key: &str) -> Option<Duration> {
        let refused_until = self.refused_until.lock().unwrap_or_else(|e| e.into_inner());
        let wait = refused_until.get(key)?.checked_duration_since(Instant::now())?;
        (!wait.is_zero()).then_some(wait)
    }

    fn sweep_early(&self, limiter: &DefaultKeyedRateLimiter<String>) {
        let now = self
            .started
            .map_or(0, |started| started.elapsed().as_millis() as u64);
        let last = self.last_early_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000
            && self
                .last_early_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            limiter.retain_recent();
        }
    }

    /// Drops the buckets that refilled, and the rates no key uses any more.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut refused_until = self.refused_until.lock().unwrap_or_else(|e| e.into_inner());
        refused_until.retain(|_, until| *until > now);
        drop(refused_until);
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        limiters.retain(|_, limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            !limiter.is_empty()
        });
    }

    /// Keys holding a bucket that has not refilled (for tests and the console).
    pub fn keys(&self) -> usize {
        let limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        limiters.values().map(|limiter| limiter.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_granted_then_refused_with_the_wait_and_keys_are_separate() {
        let buckets = Buckets::new();
        let rate = Rate::new(1.0, 3);
        for _ in 0..3 {
            buckets.take("a", rate).unwrap();
        }
        let wait = buckets.take("a", rate).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(buckets.refusing("a").is_some_and(|left| left <= wait));
        buckets.take("b", rate).unwrap();
        assert_eq!(buckets.refusing("b"), None);
        // Another rate for the same key is another bucket (a tenant's override).
        buckets.take("a", Rate::new(10.0, 10)).unwrap();
    }

    #[test]
    fn extreme_rates_neither_panic_nor_overflow() {
        let buckets = Buckets::new();
        for rate in [1e-30, f64::MIN_POSITIVE, 1e30, f64::MAX] {
            let _ = buckets.take("a", Rate::new(rate, 1));
        }
    }

    #[test]
    fn a_zero_rate_is_no_limit_and_refilled_buckets_are_swept() {
        let buckets = Buckets::new();
        for _ in 0..10_000 {
            buckets.take("a", Rate::new(0.0, 0)).unwrap();
        }
        assert_eq!(buckets.keys(), 0);
        buckets.take("b", Rate::new(1e6, 1)).unwrap();
        assert_eq!(buckets.keys(), 1);
        std::thread::sleep(Duration::from_millis(5));
        buckets.sweep();
        assert_eq!(buckets.keys(), 0);
    }
}
