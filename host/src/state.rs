//! What every request handler shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::biscuit::BiscuitIssuer;
use crate::auth::jwt::JwtKeys;
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
    pub clock: Arc<Clock>,
    /// Per-tenant guest components (validate / transform each insert).
    pub guests: Arc<Guests>,
    /// Cancelled when the server stops: ends every open stream.
    pub shutdown: CancellationToken,
}
