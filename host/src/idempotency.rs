//! `Idempotency-Key` on `/insert`: a client that retries after an ambiguous failure (a timeout, a
//! dropped connection, a 503) with the same key stores one event, and gets the first one's answer.
//!
//! A key is the client's own text, scoped to its tenant and user (two users' keys never collide)
//! and kept as a hash. Each event log remembers the keys of the events it committed for `WINDOW`:
//! `RecentKeys`, fed by the log's own commits (LMDB's writer, or the JetStream tail on every node),
//! answers a retry before its guest judges it again; the append itself catches a retry racing the
//! first attempt (LMDB's writer checks the keys, JetStream de-duplicates the message id).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a key is remembered: JetStream's de-duplication window for the event stream.
pub const WINDOW: Duration = Duration::from_secs(120);
/// Longest key a client may send, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// Most keys one node remembers; past it the oldest are forgotten before their window ends.
pub const MAX_REMEMBERED: usize = 100_000;

/// A client's key, scoped to its tenant and user: `ik-` and a SHA-256 in hex (also a valid
/// JetStream message id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The scoped key for `text` as sent by `username` of `tenant`; an error says what is wrong
    /// with the text.
    pub fn new(tenant: &str, username: &str, text: &str) -> Result<Self, String> {
        let printable = text.bytes().all(|byte| byte.is_ascii_graphic());
        if text.is_empty() || text.len() > MAX_KEY_BYTES || !printable {
            return Err(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_BYTES} printable ASCII characters without spaces"
            ));
        }
        let mut hash = Sha256::new();
        // Length-prefixed, so that no two (tenant, username, key) triples hash the same text.
        for part in [tenant, username, text] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Self(format!("ik-{hex}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key a message id is, if it is one (`ik-` and 64 hex digits).
    pub fn from_message_id(id: &str) -> Option<Self> {
        let hex = id.strip_prefix("ik-")?;
        let is_key = hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit());
        is_key.then(|| Self(id.to_owned()))
    }
}

/// Where an event with a key was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub tenant: String,
    pub seq: u64,
}

/// The keys of recently committed events, for `WINDOW` and at most `MAX_REMEMBERED` of them.
#[derive(Default)]
pub struct RecentKeys {
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    by_key: HashMap<IdempotencyKey, Committed>,
    /// Keys in commit order, with when they were committed: the oldest are forgotten first.
    order: VecDeque<(Instant, IdempotencyKey)>,
}

impl RecentKeys {
    /// Remembers keys just committed, each with where its event is.
    pub fn record<'a>(&self, keys: impl IntoIterator<Item = (&'a IdempotencyKey, Committed)>) {
        let now = Instant::now();
        let mut remembered = self.inner.lock().expect("recent keys lock");
        for (key, committed) in keys {
            if remembered.by_key.insert(key.clone(), committed).is_none() {
                remembered.order.push_back((now, key.clone()));
            }
        }
        remembered.forget_old(now);
    }

    /// Where the event committed with `key` is, if it was committed within the window.
    pub fn get(&self, key: &IdempotencyKey) -> Option<Committed> {
        let mut remembered = self.inner.lock().expect("recent keys lock");
        remembered.forget_old(Instant::now());
        remembered.by_key.get(key).cloned()
    }
}

impl Remembered {
    fn forget_old(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            let expired = now.duration_since(*at) >= WINDOW;
            if !expired && self.order.len() <= MAX_REMEMBERED {
                break;
            }
            self.by_key.remove(key);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_to_tenant_and_user_and_checked() {
        let key = |tenant, user, text| IdempotencyKey::new(tenant, user, text).unwrap();
        assert_eq!(key("t", "ann", "k1"), key("t", "ann", "k1"));
        assert_ne!(key("t", "ann", "k1"), key("t", "bob", "k1"));
        assert_ne!(key("t", "ann", "k1"), key("u", "ann", "k1"));
        // No ambiguity from where one part ends.
        assert_ne!(key("t", "an", "nk1"), key("t", "ann", "k1"));
        assert!(key("t", "a", "k").as_str().starts_with("ik-"));
        for bad in ["", "with space", "tab\t", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::new("t", "a", bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::new("t", "a", &"k".repeat(255)).is_ok());
        let key = key("t", "a", "k");
        assert_eq!(IdempotencyKey::from_message_id(key.as_str()), Some(key));
        assert_eq!(IdempotencyKey::from_message_id("0190a3c4-uuid"), None);
    }

    #[test]
    fn remembers_committed_keys_up_to_its_bound() {
        let recent = RecentKeys::default();
        let key = |seq: u64| IdempotencyKey::new("t", "a", &seq.to_string()).unwrap();
        let keys: Vec<(IdempotencyKey, u64)> = (1..=(MAX_REMEMBERED as u64 + 10))
            .map(|seq| (key(seq), seq))
            .collect();
        recent.record(keys.iter().map(|(key, seq)| {
            let committed = Committed {
                tenant: "t".into(),
                seq: *seq,
            };
            (key, committed)
        }));
        assert_eq!(recent.get(&key(11)).map(|c| c.seq), Some(11));
        assert_eq!(
            recent.get(&key(10)),
            None,
            "the oldest are forgotten past the bound"
        );
        assert_eq!(recent.get(&IdempotencyKey::new("t", "b", "11").unwrap()), None);
    }
}
