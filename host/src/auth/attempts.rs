//! Failed-guess limits for one-time codes (login two-factor codes, password-reset codes).
//!
//! A 6-digit code has a million values; without a limit a client could try them all while one code
//! is valid. After `MAX_FAILURES` wrong codes for a user within one window, further attempts for that
//! user are refused (429) until the window ends, whether the code is right or not, and the refusal is
//! logged once per window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong codes a user may send per window.
pub const MAX_FAILURES: u32 = 5;
/// Users tracked at once; past it, windows that ended are dropped, then the oldest entries.
const MAX_TRACKED: usize = 10_000;

struct Window {
    started: Instant,
    failures: u32,
}

/// Wrong-code counts per user for one kind of code.
pub struct AttemptLimiter {
    /// How long a window lasts: the life of the code being guessed.
    window: Duration,
    users: Mutex<HashMap<String, Window>>,
}

impl AttemptLimiter {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            users: Mutex::default(),
        }
    }

    /// Whether `username` may try a code now (false once the window's failures are used up).
    pub fn allows(&self, username: &str) -> bool {
        let users = self.users.lock().expect("attempt limiter lock");
        users
            .get(username)
            .is_none_or(|window| window.started.elapsed() >= self.window || window.failures < MAX_FAILURES)
    }

    /// Counts a wrong code for `username`; logs when this one used up the window.
    pub fn failed(&self, username: &str, kind: &str) {
        let mut users = self.users.lock().expect("attempt limiter lock");
        if users.len() >= MAX_TRACKED && !users.contains_key(username) {
            users.retain(|_, window| window.started.elapsed() < self.window);
            if users.len() >= MAX_TRACKED {
                let oldest = users
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(name, _)| name.clone());
                if let Some(oldest) = oldest {
                    users.remove(&oldest);
                }
            }
        }
        let window = users.entry(username.to_owned()).or_insert(Window {
            started: Instant::now(),
            failures: 0,
        });
        if window.started.elapsed() >= self.window {
            *window = Window {
                started: Instant::now(),
                failures: 0,
            };
        }
        window.failures += 1;
        if window.failures == MAX_FAILURES {
            tracing::warn!(
                username,
                kind,
                window_secs = self.window.as_secs(),
                "too many wrong codes; refusing further attempts for this user until the window ends"
            );
        }
    }

    /// Forgets `username`'s failures (after a right code).
    pub fn succeeded(&self, username: &str) {
        self.users.lock().expect("attempt limiter lock").remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_close_the_window_for_that_user_only() {
        let limiter = AttemptLimiter::new(Duration::from_secs(60));
        for _ in 0..MAX_FAILURES {
            assert!(limiter.allows("ann"));
            limiter.failed("ann", "test");
        }
        assert!(!limiter.allows("ann"));
        assert!(limiter.allows("bob"));
        limiter.succeeded("ann");
        assert!(limiter.allows("ann"));
    }

    #[test]
    fn a_new_window_starts_afresh() {
        let limiter = AttemptLimiter::new(Duration::ZERO);
        for _ in 0..MAX_FAILURES {
            limiter.failed("ann", "test");
        }
        assert!(limiter.allows("ann"), "the window already ended");
    }
}
