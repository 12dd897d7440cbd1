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
use crate::fanout::Fanout;
use crate::guests::Guests;
use crate::store::Store;
use crate::store::writer::EventWriter;

pub struct AppState {
    pub config: Config,
    /// Users, events, server keys.
    pub store: Arc<Store>,
    /// The only way events are written (group commit).
    pub writer: EventWriter,
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
    pub clock: Arc<Clock>,
    /// Per-tenant guest components (validate / transform each insert).
    pub guests: Arc<Guests>,
    /// Cancelled when the server stops: ends every open stream.
    pub shutdown: CancellationToken,
}
