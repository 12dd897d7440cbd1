//! The event log seam: what the insert and subscribe paths need of event storage, whichever store is
//! behind it (LMDB on one node, NATS JetStream in a cluster; chosen once, in `run`).
//!
//! Whoever implements it also feeds the live fan-out: every committed event, in log order, exactly
//! once per node.

use std::sync::Arc;

use crate::filter::EventFilter;
use crate::idempotency::IdempotencyKey;
use crate::model::{Event, NewEvent};
use crate::storage::StorageResult;

/// The newest event of each name in a tenant, oldest first.
#[derive(Debug, Default)]
pub struct LatestReplay {
    pub events: Vec<Event>,
    /// The tenant's newest sequence when the replay was read: live events up to it are covered.
    pub last_seq: u64,
}

/// One page of a tenant's events in sequence order, and the stored bytes they took.
#[derive(Debug, Default)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub bytes: usize,
}

/// Where a page of history starts (exclusive): newest first below `Before`, oldest first above
/// `After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    Before(u64),
    After(u64),
}

/// A page of history in the order asked for, and whether more matching events lie beyond it.
#[derive(Debug, Default)]
pub struct HistoryPage {
    pub events: Vec<Event>,
    pub more: bool,
}

/// What an erasure removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erase {
    /// Every event this user inserted, in every tenant (a user may have moved).
    User(String),
    /// Every event of this tenant.
    Tenant(String),
}

/// What retention keeps: events newer than `before_ms` (a timestamp, ms since the epoch) and the
/// newest `per_name` of each name; always the newest of each name; and events committed with an
/// idempotency key at or after `keyed_since_ms`, while a retry may still ask for them (removed, a
/// retried insert would be stored again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub before_ms: Option<u64>,
    pub per_name: Option<u32>,
    pub keyed_since_ms: Option<u64>,
}

#[async_trait::async_trait]
pub trait EventLog: Send + Sync {
    /// Appends one event and answers once it is durable, with its sequence number: strictly
    /// increasing per tenant. An event whose guest reads (`NewEvent::reads`) no longer hold is not
    /// appended: `StorageError::StaleRead`.
    async fn append(&self, event: NewEvent) -> StorageResult<Arc<Event>>;

    /// Events of `tenant` after sequence `after`, in order: at most `limit`, and no more once
    /// `max_bytes` of stored records were read (always at least one).
    async fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<EventPage>;

    /// A page of `tenant`'s events that `filter` lets through, from `start` on in its direction: at
    /// most `limit`, and no more once `max_bytes` of stored records were read (always at least
    /// one). Costs the page, not the tenant: reads follow an index by name where the store has one.
    async fn history(
        &self,
        tenant: &str,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage>;

    /// The newest event of each name in `tenant`, oldest first, and the sequence up to which live
    /// events are covered by it.
    async fn latest_events(&self, tenant: &str) -> StorageResult<LatestReplay>;

    /// A sequence at or above `tenant`'s newest: a resume point above it means "from now".
    async fn newest_seq(&self, tenant: &str) -> StorageResult<u64>;

    /// The newest event named `name` in `tenant` (what guests read through `state.latest`).
    async fn latest_of(&self, tenant: &str, name: &str) -> StorageResult<Option<Event>>;

    /// The event committed with `key` within the idempotency window (`idempotency::WINDOW`), if
    /// this node knows of it: a client's retry is answered with it instead of being judged again.
    async fn committed_with(&self, key: &IdempotencyKey) -> StorageResult<Option<Event>>;

    /// Removes what `which` selects, so that no read answers it again (stream replay, resume,
    /// history pages, guests' `latest`); answers how many events went. Sequences are never given
    /// again. Runs in bounded steps beside inserts.
    async fn erase(&self, which: Erase) -> StorageResult<u64>;

    /// Removes, in bounded steps beside inserts, every event `keep` does not keep; answers how
    /// many went. Raises each tenant's horizon to the highest sequence removed.
    async fn trim(&self, keep: Keep) -> StorageResult<u64>;

    /// The highest sequence of `tenant` retention removed (0: none): a resume from below it
    /// cannot be exact.
    async fn horizon(&self, tenant: &str) -> StorageResult<u64>;

    /// Bytes `tenant`'s stored events take, where this log counts them (`None`: it does not).
    async fn stored_bytes(&self, tenant: &str) -> StorageResult<Option<u64>>;

    /// Completes if the log stopped for good, so that Broker exits rather than refusing every
    /// insert; never completes while it works.
    async fn stopped(&self);
}
