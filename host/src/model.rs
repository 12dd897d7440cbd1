//! The records Broker keeps: users and events. The store persists them; nothing here knows how.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::idempotency::IdempotencyKey;

/// A user account. `password_hash` and `totp_secret` are secrets: they never leave the host, and the
/// `Debug` impl leaves them out so that they cannot reach a log line by accident.
#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub revoked: bool,
    pub tenant_name: String,
    pub email: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub data: Option<Value>,
    #[serde(default)]
    pub two_factor: bool,
    /// Base32 TOTP secret for login two-factor, when enabled.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// The login TOTP step last accepted: a code is accepted once (RFC 6238 §5.2).
    #[serde(default)]
    pub last_totp_step: Option<u64>,
    /// The pending password-reset code, if one was issued.
    #[serde(default)]
    pub reset: Option<PasswordReset>,
    /// Bumped on every update, so that a future replicated directory can compare-and-set.
    #[serde(default)]
    pub revision: u64,
    /// Bumped when the user's credentials must end: a password change or reset, a revoke or
    /// unrevoke, a tenant move. JWTs carry it, so one from an earlier generation is refused, and
    /// open streams of an earlier generation close.
    #[serde(default)]
    pub credential_generation: u64,
}

/// A password-reset code issued by `/create_totp`: its own secret (never the login one), and when it
/// was issued. It is cleared when used, so it works once.
#[derive(Clone, Serialize, Deserialize)]
pub struct PasswordReset {
    /// Base32 secret.
    pub secret: String,
    /// Seconds since the Unix epoch.
    pub issued_at: u64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("tenant_name", &self.tenant_name)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The user as the admin API shows it, secrets masked. Keys come out sorted.
    pub fn public_view(&self) -> Value {
        json!({
            "data": self.data,
            "email": self.email,
            "id": self.id,
            "password": "***",
            "revoked": self.revoked,
            "scopes": self.scopes,
            "tenant_name": self.tenant_name,
            "totp": "***",
            "two_factor": self.two_factor,
            "username": self.username,
        })
    }

    pub fn scope_list(&self) -> &[String] {
        self.scopes.as_deref().unwrap_or_default()
    }
}

/// An event as the insert path hands it to the store, before it has a sequence number.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub tenant_name: String,
    pub username: String,
    pub event: String,
    pub data: Value,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// What the guest read of the tenant's state to judge this event: it commits only if each read
    /// still holds at commit.
    pub reads: Vec<LatestRead>,
    /// The client's `Idempotency-Key`, scoped: a second insert with it stores nothing new.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The tenant's `tenant_max_bytes` (0: none), checked again where the log counts bytes, at
    /// commit: checked only before, racing inserts would all pass it.
    pub tenant_max_bytes: u64,
}

/// A guest's read of the tenant's newest event of `name`: it saw sequence `seq` (0: none yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestRead {
    pub name: String,
    pub seq: u64,
}

/// A stored event. `seq` is strictly increasing per tenant and is the SSE `id:`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: Uuid,
    pub seq: u64,
    pub tenant_name: String,
    pub username: String,
    pub event: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    pub data: Value,
    /// The scoped `Idempotency-Key` it was inserted with, if any (stored; never sent to clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Event {
    pub fn from_new(new: NewEvent, seq: u64) -> Self {
        Self {
            id: Uuid::now_v7(),
            seq,
            tenant_name: new.tenant_name,
            username: new.username,
            event: new.event,
            timestamp: new.timestamp,
            data: new.data,
            idempotency_key: new.idempotency_key,
        }
    }
}
