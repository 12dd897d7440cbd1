//! The subscribe path, one library call: `subscribe` turns an authenticated caller into a stream of
//! SSE frames that the HTTP layer only has to write.
//!
//! 1. Watch the user's record, then read it again: a revoke or tenant move that landed while the
//!    caller was being authenticated is seen here, not missed for the life of the stream.
//! 2. Join the tenant's live feed before reading the store, so nothing committed in between is lost.
//! 3. Replay: the newest event of each name (oldest first), or every event after `Last-Event-ID`.
//! 4. Live frames, skipping sequences already sent. A stream that lags behind the live channel
//!    reads the gap back from the store and carries on (`broker-client` never reconnects).
//! 5. Skip events the connection's filter (`?events=`) leaves out, with `--enforce_scopes` those
//!    whose name the user's `get` scopes do not cover, and those the tenant's read rule (its
//!    guest's `can-read`, asked once per name and remembered) denies: a skipped event still moves
//!    the cursor, so `Last-Event-ID` resume stays exact. A scope change applies to the open stream
//!    at once, and asks the read rule again.
//! 6. End on disconnect, shutdown, a change that ends the user's access, or credential expiry.
//! 7. Every user stream counts in its user's presence while it lives; one opened with
//!    `?presence=true` also gets, after its replay, the tenant's present users and then their
//!    joins and leaves (`crate::presence`), if the user's scopes and the read rule allow
//!    `broker.presence`.
//!
//! A stream is no task of its own: it is a state machine that hyper polls when the connection can
//! take more bytes, so an idle subscriber holds its cursor, its two channel handles and little else,
//! and a client that stops reading stops the polling (and then lags and catches up, bounded).

mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio_util::sync::CancellationToken;

use std::collections::BTreeSet;

use self::stream::{EventStream, Owner, Viewer};
use crate::auth::Identity;
use crate::auth::scopes::{self, Operation};
use crate::clock::Clock;
use crate::event_log::EventLog;
use crate::fanout::Fanout;
use crate::filter::EventFilter;
use crate::presence::{PRESENCE_EVENT, Presence};
use crate::read_rule::{ReadRule, Reader};
use crate::storage::StorageError;
use crate::user_directory::UserDirectory;

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The user was revoked, moved or removed between authentication and now.
    #[error("user is revoked or no longer in this tenant")]
    UserChanged,
    /// `--enforce_scopes` and the user holds no `get` scope at all.
    #[error("a scope E:get (or *:get) is needed to receive events")]
    Forbidden,
    /// Presence asked for, and the user's scopes or the tenant's read rule do not allow it.
    #[error("presence needs the scope broker.presence:get (or *:get) and the read rule's consent")]
    PresenceForbidden,
    #[error(transparent)]
    Store(#[from] StorageError),
}

/// The subscribe path and what it touches: the event log, the user directory, the read rule, the
/// live fan-out, the clock, the shutdown signal and two flags.
pub struct Streams {
    events: Arc<dyn EventLog>,
    users: Arc<dyn UserDirectory>,
    /// The tenants' read rules: a stream carries only the names its user may read.
    rules: Arc<dyn ReadRule>,
    fanout: Arc<Fanout>,
    /// Who has an open stream: every user stream counts in it.
    presence: Arc<Presence>,
    clock: Arc<Clock>,
    /// Cancelled when the server stops: ends every open stream.
    shutdown: CancellationToken,
    /// `--keep_alive`: a comment line on idle streams at this period.
    keep_alive: Option<Duration>,
    /// `--enforce_scopes`: a stream carries only the names its `get` scopes cover.
    enforce_scopes: bool,
}

impl Streams {
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one of the path's dependencies, named at the call"
    )]
    pub fn new(
        events: Arc<dyn EventLog>,
        users: Arc<dyn UserDirectory>,
        rules: Arc<dyn ReadRule>,
        fanout: Arc<Fanout>,
        presence: Arc<Presence>,
        clock: Arc<Clock>,
        shutdown: CancellationToken,
        keep_alive: Option<Duration>,
        enforce_scopes: bool,
    ) -> Self {
        Self {
            events,
            users,
            rules,
            fanout,
            presence,
            clock,
            shutdown,
            keep_alive,
            enforce_scopes,
        }
    }

    /// Subscribes `identity` to its tenant's events that `filter` lets through, resuming after
    /// `resume_after` when given, with the tenant's presence when `with_presence`.
    pub async fn subscribe(
        self: &Arc<Self>,
        identity: &Identity,
        filter: EventFilter,
        resume_after: Option<u64>,
        with_presence: bool,
    ) -> Result<impl Stream<Item = Bytes> + Send + 'static, SubscribeError> {
        let user = &identity.user;
        let user_watch = self.fanout.watch_user(&user.username);
        let mut owner = Owner {
            username: user.username.clone(),
            id: user.id,
            tenant_name: user.tenant_name.clone(),
            credential_generation: user.credential_generation,
            scopes: None,
            all_scopes: Vec::new(),
        };
        let current = self.users.get(&user.username).await?;
        if !owner.still_allowed(current.as_ref()) {
            return Err(SubscribeError::UserChanged);
        }
        owner.all_scopes = current
            .as_ref()
            .map(|user| user.scope_list().to_vec())
            .unwrap_or_default();
        if self.enforce_scopes && !owner.take_scopes(current.as_ref()) {
            return Err(SubscribeError::Forbidden);
        }
        if with_presence
            && !self
                .may_see_presence(&owner.username, &owner.tenant_name, &owner.all_scopes)
                .await
        {
            return Err(SubscribeError::PresenceForbidden);
        }
        let joined = self.presence.join(&owner.tenant_name, &owner.username);
        let viewer = Viewer {
            owner,
            watch: user_watch,
            expiry: Box::pin(tokio::time::sleep(Duration::from_secs(
                identity.expiry.saturating_sub(self.clock.now_secs()),
            ))),
        };
        let mut stream = EventStream::open(self, &user.tenant_name, Some(viewer), filter, resume_after);
        stream.count_in_presence(joined);
        if with_presence {
            stream.watch_presence();
        }
        stream.settle_start().await?;
        Ok(stream.frames())
    }

    /// Whether a user with `scopes` may see its tenant's presence: with `--enforce_scopes` a
    /// `get` scope must cover `broker.presence`, and the tenant's read rule (if any) must allow it.
    async fn may_see_presence(&self, username: &str, tenant: &str, scopes: &[String]) -> bool {
        if self.enforce_scopes && !scopes::allows(scopes, PRESENCE_EVENT, Operation::Get) {
            return false;
        }
        if !self.rules.applies(tenant) {
            return true;
        }
        let reader = Reader {
            username,
            tenant,
            scopes,
        };
        self.rules.allows(&reader, PRESENCE_EVENT).await
    }

    /// `GET /presence`: the users of the caller's tenant with an open stream, under the same
    /// rule as `?presence=true`.
    pub async fn present_users(&self, identity: &Identity) -> Result<BTreeSet<String>, SubscribeError> {
        let user = &identity.user;
        let current = self.users.get(&user.username).await?;
        let scopes = current
            .as_ref()
            .map(|user| user.scope_list().to_vec())
            .unwrap_or_default();
        if !self
            .may_see_presence(&user.username, &user.tenant_name, &scopes)
            .await
        {
            return Err(SubscribeError::PresenceForbidden);
        }
        Ok(self.presence.users(&user.tenant_name))
    }

    /// Every event of `tenant` for the admin console: the same replay, resume and live delivery as a
    /// user's stream, with no user whose access could end (the caller checked the admin token).
    pub async fn subscribe_tenant(
        self: &Arc<Self>,
        tenant: &str,
        filter: EventFilter,
        resume_after: Option<u64>,
        with_presence: bool,
    ) -> Result<impl Stream<Item = Bytes> + Send + 'static, SubscribeError> {
        let mut stream = EventStream::open(self, tenant, None, filter, resume_after);
        if with_presence {
            stream.watch_presence();
        }
        stream.settle_start().await?;
        Ok(stream.frames())
    }
}
