//! The event log seam: what the insert and subscribe paths need of event storage, whichever store is
//! behind it (LMDB on one node, NATS JetStream in a cluster; chosen once, in `run`).
//!
//! Whoever implements it also feeds the live fan-out: every committed event, in log order, exactly
//! once per node.

use std::sync::Arc;

use crate::model::{Event, NewEvent};
use crate::store::{EventPage, LatestReplay, StoreResult};

#[async_trait::async_trait]
pub trait EventLog: Send + Sync {
    /// Appends one event and answers once it is durable, with its sequence number: strictly
    /// increasing per tenant. An event whose guest reads (`NewEvent::reads`) no longer hold is not
    /// appended: `StoreError::StaleRead`.
    async fn append(&self, event: NewEvent) -> StoreResult<Arc<Event>>;

    /// Events of `tenant` after sequence `after`, in order: at most `limit`, and no more once
    /// `max_bytes` of stored records were read (always at least one).
    async fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StoreResult<EventPage>;

    /// The newest event of each name in `tenant`, oldest first, and the sequence up to which live
    /// events are covered by it.
    async fn latest_events(&self, tenant: &str) -> StoreResult<LatestReplay>;

    /// A sequence at or above `tenant`'s newest: a resume point above it means "from now".
    async fn newest_seq(&self, tenant: &str) -> StoreResult<u64>;

    /// The newest event named `name` in `tenant` (what guests read through `state.latest`).
    async fn latest_of(&self, tenant: &str, name: &str) -> StoreResult<Option<Event>>;

    /// Completes if the log stopped for good, so that Broker exits rather than refusing every
    /// insert; never completes while it works.
    async fn stopped(&self);
}
