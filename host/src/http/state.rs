//! What every request handler shares: the services the library offers (authentication, inserts,
//! streams), the user directory and the identity pieces the account endpoints use, and the flags
//! the HTTP layer itself reads. Only handlers see it: no module below `http` takes it.

use std::sync::Arc;
use std::time::Duration;

use crate::accounts::Accounts;
use crate::auth::Authenticator;
use crate::auth::attempts::AttemptLimiter;
use crate::auth::biscuit::BiscuitIssuer;
use crate::clock::Clock;
use crate::config::Config;
use crate::erasure::Erasure;
use crate::guests::Guests;
use crate::history::History;
use crate::insert::Inserts;
use crate::limits::Limits;
use crate::subscribe::Streams;
use crate::user_directory::UserDirectory;
use crate::webhooks::Webhooks;

pub struct AppState {
    pub config: Config,
    /// Every change to a user.
    pub accounts: Accounts,
    /// Deleting users and tenants, and erasing their events.
    pub erasure: Erasure,
    /// Who is calling (JWT and Basic), and JWTs for logins.
    pub auth: Authenticator,
    /// The insert path.
    pub inserts: Inserts,
    /// The subscribe path.
    pub streams: Arc<Streams>,
    /// Pages of history.
    pub history: History,
    /// Users and identity-wide keys (LMDB, or JetStream key-value in a cluster).
    pub users: Arc<dyn UserDirectory>,
    pub biscuit: BiscuitIssuer,
    /// Wrong login two-factor codes per user, per 30 s code step.
    pub login_codes: AttemptLimiter,
    /// Wrong password-reset codes per user, per `--totp_duration`.
    pub reset_codes: AttemptLimiter,
    /// Wrong admin tokens per client address, `--admin_failures` per minute.
    pub admin_tokens: AttemptLimiter,
    pub clock: Arc<Clock>,
    /// Per-tenant guest components, for the admin listing.
    pub guests: Arc<Guests>,
    /// Registered webhooks and their delivery.
    pub webhooks: Arc<Webhooks>,
    /// Rates and counts per user, tenant and client address.
    pub limits: Arc<Limits>,
}

impl AppState {
    /// How long a request body may take to arrive (`--request_timeout`).
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.config.request_timeout)
    }
}
