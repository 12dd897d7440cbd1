//! A short-lived memory of Basic credentials that argon2 already accepted, so that a client sending
//! `Authorization: Basic` on every request pays for one hash, not one per request.
//!
//! What is kept is never the password: a SHA-256 of a per-process random key, the username and the
//! password. An entry counts only for the user record revision it was verified against; every change
//! to the user (password change or reset, revoke, tenant move, any update) bumps the revision, so the
//! entry stops matching the moment the change is committed, with no invalidation call to forget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::User;

/// How long a verified credential is trusted without argon2 (the revision check still applies).
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(60);
/// Most users remembered at once: 10,000 entries are about 1 MiB.
pub const CREDENTIAL_CACHE_ENTRIES: usize = 10_000;

struct Entry {
    digest: [u8; 32],
    revision: u64,
    verified_at: Instant,
}

pub struct CredentialCache {
    /// Random per process: a digest from one run (or a memory dump) is useless for offline guessing
    /// against another.
    key: [u8; 32],
    /// username → the credential last verified for it.
    entries: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
    capacity: usize,
}

impl Default for CredentialCache {
    fn default() -> Self {
        Self::new(CREDENTIAL_TTL, CREDENTIAL_CACHE_ENTRIES)
    }
}

impl CredentialCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let mut key = [0; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self {
            key,
            entries: Mutex::default(),
            ttl,
            capacity,
        }
    }

    /// Bound to the user's id too: a user deleted and created again under the same name (at
    /// revision 0 again) is another user, and the first one's password is not its.
    fn digest(&self, user: &User, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(user.id.as_bytes());
        hasher.update((user.username.len() as u64).to_be_bytes());
        hasher.update(&user.username);
        hasher.update(password);
        hasher.finalize().into()
    }

    /// Whether `password` was verified for this very revision of `user` within the TTL.
    pub fn accepts(&self, user: &User, password: &str) -> bool {
        let digest = self.digest(user, password);
        let entries = self.entries.lock().expect("credential cache lock");
        entries.get(&user.username).is_some_and(|entry| {
            entry.revision == user.revision
                && entry.verified_at.elapsed() < self.ttl
                && bool::from(entry.digest.ct_eq(&digest))
        })
    }

    /// Remembers that argon2 accepted `password` for `user` as it is now.
    pub fn remember(&self, user: &User, password: &str) {
        let entry = Entry {
            digest: self.digest(user, password),
            revision: user.revision,
            verified_at: Instant::now(),
        };
        let mut entries = self.entries.lock().expect("credential cache lock");
        if entries.len() >= self.capacity && !entries.contains_key(&user.username) {
            entries.retain(|_, entry| entry.verified_at.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                return; // full of live entries: this one simply pays for argon2 next time
            }
        }
        entries.insert(user.username.clone(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(revision: u64) -> User {
        serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::nil(), "username": "ann", "password_hash": "x", "revoked": false,
            "tenant_name": "t", "email": null, "scopes": null, "data": null, "revision": revision,
        }))
        .expect("a user record")
    }

    #[test]
    fn a_credential_counts_only_for_its_password_and_revision() {
        let cache = CredentialCache::default();
        cache.remember(&user(3), "secret");
        assert!(cache.accepts(&user(3), "secret"));
        assert!(!cache.accepts(&user(3), "secret2"), "another password");
        assert!(!cache.accepts(&user(4), "secret"), "the user changed since");
    }

    #[test]
    fn entries_expire_and_the_size_is_capped() {
        let cache = CredentialCache::new(Duration::ZERO, 1);
        cache.remember(&user(1), "secret");
        assert!(!cache.accepts(&user(1), "secret"), "expired at once");
        let cache = CredentialCache::new(Duration::from_secs(60), 1);
        let mut other = user(1);
        other.username = "bob".into();
        cache.remember(&other, "secret");
        cache.remember(&user(1), "secret");
        assert!(cache.accepts(&other, "secret"));
        assert!(!cache.accepts(&user(1), "secret"), "no room: not remembered");
    }
}
