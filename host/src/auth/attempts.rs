//! Failed-guess limits: wrong one-time codes per user (login two-factor codes, password-reset codes)
//! and wrong admin tokens per client address.
//!
//! A 6-digit code has a million values; without a limit a client could try them all while one code
//! is valid. After `max_failures` wrong guesses for a key within one window, further attempts for
//! that key are refused (429) until the window ends, whether the guess is right or not, and the
//! refusal is logged once per window.
//!
//! An attempt is reserved, and counted as a failure, *before* its guess is checked: checking first
//! and counting after lets N concurrent guesses all pass the check while none is counted yet (with
//! a store round trip in between, as in a cluster, that was N guesses per window instead of 5).
//! A right guess then forgets the key's failures; an attempt that turned out not to be a guess (an
//! unknown user) is given back, so that made-up names never occupy the table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong codes a user may send per window.
pub const MAX_CODE_FAILURES: u32 = 5;
/// Keys tracked at once; past it, windows that ended are dropped, then the oldest entries.
const MAX_TRACKED: usize = 10_000;

struct Window {
    started: Instant,
    failures: u32,
    /// Whether this window's first refusal has been logged.
    logged: bool,
}

/// Wrong-guess counts per key (a username, or a client address) for one kind of secret.
pub struct AttemptLimiter {
    /// What is being guessed, for the log line.
    kind: &'static str,
    /// How long a window lasts: the life of the code being guessed.
    window: Duration,
    max_failures: u32,
    keys: Mutex<HashMap<String, Window>>,
}

/// One reserved attempt. Dropped without `succeeded` or `give_back`, it stays counted as a
/// failure.
#[must_use = "an attempt is a failure unless it is settled"]
pub struct Attempt<'a> {
    limiter: &'a AttemptLimiter,
    key: String,
}

impl AttemptLimiter {
    pub fn new(kind: &'static str, window: Duration, max_failures: u32) -> Self {
        Self {
            kind,
            window,
            max_failures,
            keys: Mutex::default(),
        }
    }

    /// Reserves an attempt for `key`, counted as a failure until it is settled; `None` (answer 429)
    /// once the window's failures are used up. For guesses checked after an await (a store read).
    pub fn reserve(&self, key: &str) -> Option<Attempt<'_>> {
        let reserved = self.with_window(key, |window| {
            window.failures += 1;
        });
        reserved.map(|()| Attempt {
            limiter: self,
            key: key.to_owned(),
        })
    }

    /// Counts a guess judged already (`right`), under the same lock as the check: for guesses
    /// checked without an await, such as the admin token. `None` (answer 429) once the window's
    /// failures are used up, right guess or not; else whether the guess was right.
    pub fn judge(&self, key: &str, right: bool) -> Option<bool> {
        let judged = self.with_window(key, |window| {
            if !right {
                window.failures += 1;
            }
        });
        judged.map(|()| right)
    }

    /// Runs `count` on `key`'s current window unless its failures are used up (then `None`, and
    /// the first refusal of the window is logged). A window left with no failure is forgotten:
    /// nothing is kept of a key that only ever guessed right.
    fn with_window(&self, key: &str, count: impl FnOnce(&mut Window)) -> Option<()> {
        let mut keys = self.keys.lock().expect("attempt limiter lock");
        if keys.len() >= MAX_TRACKED && !keys.contains_key(key) {
            keys.retain(|_, window| window.started.elapsed() < self.window);
            if keys.len() >= MAX_TRACKED {
                let oldest = keys.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    keys.remove(&oldest);
                }
            }
        }
        let window = keys.entry(key.to_owned()).or_insert_with(Window::new);
        if window.started.elapsed() >= self.window {
            *window = Window::new();
        }
        if window.failures >= self.max_failures {
            if !window.logged {
                window.logged = true;
                tracing::warn!(
                    key,
                    kind = self.kind,
                    window_secs = self.window.as_secs(),
                    "too many wrong attempts; refusing further attempts until the window ends"
                );
            }
            return None;
        }
        count(window);
        if window.failures == 0 {
            keys.remove(key);
        }
        Some(())
    }
}

impl Window {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            failures: 0,
            logged: false,
        }
    }
}

impl Attempt<'_> {
    /// The guess was right: the key's failures are forgotten.
    pub fn succeeded(self) {
        let mut keys = self.limiter.keys.lock().expect("attempt limiter lock");
        keys.remove(&self.key);
    }

    /// The attempt does not count: it was no guess (a user that does not exist).
    pub fn give_back(self) {
        let mut keys = self.limiter.keys.lock().expect("attempt limiter lock");
        if let Some(window) = keys.get_mut(&self.key) {
            window.failures = window.failures.saturating_sub(1);
            if window.failures == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(window: Duration) -> AttemptLimiter {
        AttemptLimiter::new("test", window, MAX_CODE_FAILURES)
    }

    #[test]
    fn five_failures_close_the_window_for_that_key_only() {
        let limiter = limiter(Duration::from_secs(60));
        for _ in 0..MAX_CODE_FAILURES {
            drop(limiter.reserve("ann").expect("within the bound"));
        }
        assert!(limiter.reserve("ann").is_none());
        assert!(limiter.reserve("bob").is_some());
    }

    #[test]
    fn attempts_in_flight_count_before_they_are_checked() {
        let limiter = limiter(Duration::from_secs(60));
        // Held at once, as concurrent requests hold them while they check their codes.
        let held: Vec<_> = (0..50).filter_map(|_| limiter.reserve("ann")).collect();
        assert_eq!(held.len(), MAX_CODE_FAILURES as usize);
    }

    #[test]
    fn a_right_guess_forgets_and_a_non_guess_is_given_back() {
        let limiter = limiter(Duration::from_secs(60));
        for _ in 0..MAX_CODE_FAILURES - 1 {
            drop(limiter.reserve("ann"));
        }
        limiter.reserve("ann").unwrap().succeeded();
        for _ in 0..MAX_CODE_FAILURES {
            drop(
                limiter
                    .reserve("ann")
                    .expect("a fresh window after the right code"),
            );
        }
        for _ in 0..100 {
            limiter.reserve("ghost").unwrap().give_back();
        }
        assert!(
            limiter.keys.lock().unwrap().get("ghost").is_none(),
            "nothing kept for a non-guess"
        );
    }

    #[test]
    fn judged_guesses_count_only_when_wrong_and_right_ones_forget_nothing() {
        let limiter = AttemptLimiter::new("test", Duration::from_secs(60), 3);
        assert_eq!(limiter.judge("10.0.0.1", true), Some(true));
        assert!(
            limiter.keys.lock().unwrap().is_empty(),
            "nothing kept for a right guess"
        );
        assert_eq!(limiter.judge("10.0.0.1", false), Some(false));
        assert_eq!(limiter.judge("10.0.0.1", false), Some(false));
        assert_eq!(
            limiter.judge("10.0.0.1", true),
            Some(true),
            "a right guess does not count"
        );
        assert_eq!(limiter.judge("10.0.0.1", false), Some(false));
        assert_eq!(limiter.judge("10.0.0.1", true), None, "cut off: right or wrong");
        assert_eq!(limiter.judge("10.0.0.2", true), Some(true));
    }

    #[test]
    fn a_new_window_starts_afresh() {
        let limiter = limiter(Duration::ZERO);
        for _ in 0..MAX_CODE_FAILURES {
            drop(limiter.reserve("ann"));
        }
        assert!(limiter.reserve("ann").is_some(), "the window already ended");
    }
}
