//! What every request handler shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::attempts::AttemptLimiter;
use crate::auth::biscuit::BiscuitIssuer;
use crate::auth::credential_cache::CredentialCache;
use crate::auth::jwt::JwtKeys;
use crate::auth::password_workers::PasswordWorkers;
use crate::clock::Clock;
use crate::config::Config;
use crate::event_log::EventLog;
use crate::fanout::Fanout;
use crate::guests::Guests;
use crate::user_directory::UserDirectory;

pub struct AppState {
    pub config: Config,
    /// Events: appended, replayed, read back after a position (LMDB, or JetStream in a cluster).
    pub events: Arc<dyn EventLog>,
    /// Users and identity-wide keys (LMDB, or JetStream key-value in a cluster).
    pub users: Arc<dyn UserDirectory>,
    /// Live per-tenant channels and user-change notices.
    pub fanout: Arc<Fanout>,
    pub jwt: JwtKeys,
    pub biscuit: BiscuitIssuer,
    /// Every argon2 hash and verification runs here: bounded in threads, memory and queue.
    pub passwords: PasswordWorkers,
    /// Basic credentials argon2 accepted recently, valid for the user revision they were checked on.
    pub credentials: CredentialCache,
    /// Wrong login two-factor codes per user, per 30 s code step.
    pub login_codes: AttemptLimiter,
    /// Wrong password-reset codes per user, per `--totp_duration`.
    pub reset_codes: AttemptLimiter,
    /// Wrong admin tokens per client address, `--admin_failures` per minute.
    pub admin_tokens: AttemptLimiter,
    pub clock: Arc<Clock>,
    /// Per-tenant guest components (validate / transform each insert).
    pub guests: Arc<Guests>,
    /// Cancelled when the server stops: ends every open stream.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// How long a request body may take to arrive (`--request_timeout`).
    pub fn body_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.config.request_timeout)
    }
}
