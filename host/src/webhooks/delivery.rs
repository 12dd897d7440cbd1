//! One webhook's delivery on this node: take the lease (only one node delivers a webhook at a
//! time), then send the tenant's committed events after the cursor, in order, one at a time, each
//! until it is answered 2xx; move the cursor only past answered (or unmatched) events. A webhook
//! that fails `--webhook_attempts` times in a row is paused until an admin resumes it.
//!
//! The cursor is saved with the lease, by compare-and-set, at least every `SAVE_EVERY` and at
//! each failure: a node that dies loses at most that much progress, and the next holder sends
//! those events again (at least once; the receiver deduplicates on `webhook-id`).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::client::{Outcome, Sender};
use super::registry::{DeliveryState, Registry, StateRecord, WebhookConfig};
use super::signature::SigningKey;
use crate::clock::Clock;
use crate::event_log::EventLog;
use crate::fanout::Fanout;
use crate::filter::EventFilter;
use crate::metrics::{OutcomeLabels, metrics};
use crate::model::Event;
use crate::storage::StorageResult;

/// How long a lease lasts in a cluster unless renewed: a node that dies stops delivering its
/// webhooks, and another takes them over, within about this long.
pub const LEASE: Duration = Duration::from_secs(10);
/// The lease on LMDB, where one process at a time opens the database and holds every lease under
/// one name: renewing it is a disk commit, so it is rarely needed.
pub const LOCAL_LEASE: Duration = Duration::from_secs(3600);
/// This node's name in leases on LMDB: the same after a restart, which takes its leases back.
pub const LOCAL_NODE: &str = "local";
/// How often a delivering node saves its cursor at least.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often a node that does not hold a webhook looks whether it can take it; also how long an
/// idle holder waits for a live event before reading the log again.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Events read from the log at once.
const PAGE: usize = 64;
const PAGE_BYTES: usize = 4 << 20;
/// The longest wait between two attempts at one event.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What every worker of a node shares.
pub struct Shared {
    pub registry: Registry,
    pub events: Arc<dyn EventLog>,
    pub fanout: Arc<Fanout>,
    pub clock: Arc<Clock>,
    pub sender: Sender,
    /// Requests in flight on this node (`--webhook_concurrency`).
    pub permits: Semaphore,
    /// Failed attempts in a row before a webhook is paused (`--webhook_attempts`).
    pub attempts: u32,
    /// The wait after a first failure; it doubles with each (`--webhook_backoff_ms`).
    pub backoff: Duration,
    /// This node's name in leases.
    pub node: String,
    /// How long a lease lasts unless renewed (`LEASE`, or `LOCAL_LEASE` on LMDB).
    pub lease: Duration,
}

/// A webhook's registration, parsed once.
pub struct Prepared {
    pub config: WebhookConfig,
    pub url: Url,
    pub key: SigningKey,
    pub filter: EventFilter,
}

/// Why a holder stopped delivering.
enum Stop {
    /// The node shuts down, or the webhook was removed.
    Stopped,
    /// Another writer changed the record (a node took the lease over, an admin resumed, …), or
    /// the registration changed: take the lease again from a fresh read.
    Again,
    Paused,
}

pub struct Worker {
    pub id: String,
    pub shared: Arc<Shared>,
    /// The registration, as the manager last read it.
    pub config: watch::Receiver<Arc<Prepared>>,
    pub stop: CancellationToken,
}

impl Worker {
    pub async fn run(mut self) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let held = match self.take_lease().await {
                Ok(Some(held)) => held,
                Ok(None) => {
                    self.wait(LOOK_EVERY).await;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(webhook = self.id, %error, "could not read the webhook's state; trying again");
                    self.wait(LOOK_EVERY).await;
                    continue;
                }
            };
            let delivering = crate::metrics::OpenGuard::new(&metrics().webhooks_delivering);
            let stopped = self.deliver(held).await;
            drop(delivering);
            match stopped {
                Ok(Stop::Stopped) => return,
                Ok(Stop::Again | Stop::Paused) => {}
                Err(error) => {
                    tracing::warn!(webhook = self.id, %error, "webhook delivery stopped by a storage error; trying again");
                    self.wait(LOOK_EVERY).await;
                }
            }
        }
    }

    /// Sleeps `duration`, or less if the node stops or the registration changes.
    async fn wait(&mut self, duration: Duration) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            _ = self.config.changed() => {}
            () = tokio::time::sleep(duration) => {}
        }
    }

    fn now_ms(&self) -> u64 {
        self.shared.clock.now_millis()
    }

    /// A holder renews its lease once less than this is left: 70 %, so that a renewal that waits
    /// on a slow store still lands in time.
    fn renew_when_left(&self) -> Duration {
        self.shared.lease.mul_f64(0.7)
    }

    fn lease_end(&self) -> u64 {
        self.now_ms() + self.shared.lease.as_millis() as u64
    }

    /// The state record with this node holding the lease, unless the webhook is paused, gone, or
    /// held by a live lease of another node.
    async fn take_lease(&self) -> StorageResult<Option<StateRecord>> {
        let registry = &self.shared.registry;
        let Some(current) = registry.state(&self.id).await? else {
            return Ok(None);
        };
        let state = &current.state;
        let mine = state.holder.as_deref() == Some(self.shared.node.as_str());
        if state.paused || (!mine && state.holder.is_some() && state.until_ms > self.now_ms()) {
            return Ok(None);
        }
        let mut next = state.clone();
        next.holder = Some(self.shared.node.clone());
        next.until_ms = self.lease_end();
        let taken = registry.replace_state(&self.id, &current, next).await?;
        if taken.is_some() && !mine {
            let previous = state.holder.as_deref().unwrap_or("-");
            tracing::info!(
                webhook = self.id,
                node = self.shared.node,
                previous,
                "this node delivers the webhook"
            );
        }
        Ok(taken)
    }

    /// Saves `next` over `held` with the lease renewed (or, without a holder, released);
    /// `Again` if another writer came first.
    async fn save(&self, held: &mut StateRecord, mut next: DeliveryState) -> StorageResult<Result<(), Stop>> {
        next.until_ms = if next.holder.is_some() {
            self.lease_end()
        } else {
            0
        };
        match self.shared.registry.replace_state(&self.id, held, next).await? {
            Some(saved) => {
                *held = saved;
                Ok(Ok(()))
            }
            None => Ok(Err(Stop::Again)),
        }
    }

    /// Delivers while the lease holds.
    async fn deliver(&mut self, mut held: StateRecord) -> StorageResult<Stop> {
        let prepared = self.config.borrow_and_update().clone();
        let tenant = prepared.config.tenant.clone();
        // Joined before reading the log: an event committed after the read wakes the loop.
        let mut feed = self.shared.fanout.subscribe(&tenant, &prepared.filter);
        let mut state = held.state.clone();
        let mut saved_at = tokio::time::Instant::now();
        loop {
            if self.stop.is_cancelled() {
                return Ok(Stop::Stopped);
            }
            if self.config.has_changed().unwrap_or(true) {
                self.save(&mut held, state).await?.err();
                return Ok(Stop::Again);
            }
            let page = self
                .shared
                .events
                .events_after(&tenant, state.cursor, PAGE, PAGE_BYTES)
                .await?;
            if page.events.is_empty() {
                if state != held.state || lease_left(&held, self.now_ms()) < self.renew_when_left() {
                    if let Err(stop) = self.save(&mut held, state.clone()).await? {
                        return Ok(stop);
                    }
                    saved_at = tokio::time::Instant::now();
                }
                tokio::select! {
                    () = self.stop.cancelled() => return Ok(Stop::Stopped),
                    _ = self.config.changed() => return Ok(Stop::Again),
                    _ = feed.receiver.recv() => {}
                    () = tokio::time::sleep(LOOK_EVERY) => {}
                }
                continue;
            }
            for event in &page.events {
                // A changed filter or URL applies from the next event on, not the next page.
                if self.config.has_changed().unwrap_or(true) {
                    self.save(&mut held, state).await?.err();
                    return Ok(Stop::Again);
                }
                if prepared.filter.matches(&event.event)
                    && let Err(stop) = self
                        .send_until_answered(&prepared, event, &mut held, &mut state)
                        .await?
                {
                    return Ok(stop);
                }
                state.cursor = event.seq;
                if saved_at.elapsed() >= SAVE_EVERY
                    || lease_left(&held, self.now_ms()) < self.renew_when_left()
                {
                    if let Err(stop) = self.save(&mut held, state.clone()).await? {
                        return Ok(stop);
                    }
                    saved_at = tokio::time::Instant::now();
                }
            }
        }
    }

    /// Sends `event` until it is answered 2xx (then counts it in `state`), backing off between
    /// failures and saving each; `Err(Paused)` once it failed `attempts` times in a row.
    async fn send_until_answered(
        &self,
        prepared: &Prepared,
        event: &Event,
        held: &mut StateRecord,
        state: &mut DeliveryState,
    ) -> StorageResult<Result<(), Stop>> {
        let id = event.id.to_string();
        let body = envelope(event);
        // Wakes the backoff when an admin changes the registration (a fixed URL, a new secret).
        let mut registration = self.config.clone();
        loop {
            let attempt = async {
                let _permit = self.shared.permits.acquire().await.ok()?;
                let timestamp = self.shared.clock.now_secs();
                let sending = self.shared.sender.post(
                    prepared.url.clone(),
                    &prepared.key,
                    &id,
                    timestamp,
                    body.clone(),
                );
                Some(sending.await)
            };
            tokio::pin!(attempt);
            // The lease is renewed while waiting for a permit and while the request runs (up to
            // --webhook_timeout, longer than the lease): no other node sends meanwhile.
            let outcome = loop {
                tokio::select! {
                    () = self.stop.cancelled() => return Ok(Err(Stop::Stopped)),
                    outcome = &mut attempt => match outcome {
                        Some(outcome) => break outcome,
                        None => return Ok(Err(Stop::Stopped)),
                    },
                    () = tokio::time::sleep(self.shared.lease / 5) => {
                        if lease_left(held, self.now_ms()) < self.renew_when_left()
                            && let Err(stop) = self.save(held, state.clone()).await?
                        {
                            return Ok(Err(stop));
                        }
                    }
                }
            };
            let failed = match outcome {
                Outcome::Delivered => {
                    metrics()
                        .webhook_attempts
                        .get_or_create(&OutcomeLabels { outcome: "delivered" })
                        .inc();
                    state.delivered += 1;
                    if state.failures > 0 {
                        state.failures = 0;
                        state.last_error = None;
                        tracing::info!(webhook = self.id, seq = event.seq, "webhook answered again");
                    }
                    return Ok(Ok(()));
                }
                Outcome::Failed(why) => why,
            };
            metrics()
                .webhook_attempts
                .get_or_create(&OutcomeLabels { outcome: "failed" })
                .inc();
            state.failures += 1;
            state.last_error = Some(failed.clone());
            let paused = state.failures >= self.shared.attempts;
            if paused {
                state.paused = true;
                state.holder = None;
                state.until_ms = 0;
                metrics().webhook_pauses.inc();
                tracing::warn!(
                    webhook = self.id,
                    tenant = prepared.config.tenant,
                    seq = event.seq,
                    failures = state.failures,
                    error = failed,
                    "webhook paused after failing every attempt; an admin resumes it (POST /admin/webhooks/resume)"
                );
            } else {
                tracing::warn!(
                    webhook = self.id,
                    seq = event.seq,
                    failures = state.failures,
                    error = failed,
                    "webhook attempt failed; retrying"
                );
            }
            // Saved whatever happens next: the console shows the failure, and another node that
            // takes over knows how many attempts were spent.
            let saved = self.save(held, state.clone()).await?;
            if paused {
                // `save` renewed the lease it was asked to give up: release it as well.
                return Ok(Err(Stop::Paused));
            }
            if let Err(stop) = saved {
                return Ok(Err(stop));
            }
            let wait = backoff(self.shared.backoff, state.failures);
            let until = tokio::time::Instant::now() + wait;
            // The lease is renewed while waiting, so that no other node takes over mid-backoff.
            while tokio::time::Instant::now() < until {
                let step = until
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(self.shared.lease / 3);
                tokio::select! {
                    () = self.stop.cancelled() => return Ok(Err(Stop::Stopped)),
                    // The new registration is tried at once, from a fresh lease.
                    _ = registration.changed() => return Ok(Err(Stop::Again)),
                    () = tokio::time::sleep(step) => {}
                }
                if lease_left(held, self.now_ms()) < self.renew_when_left()
                    && let Err(stop) = self.save(held, state.clone()).await?
                {
                    return Ok(Err(stop));
                }
            }
        }
    }
}

fn lease_left(held: &StateRecord, now_ms: u64) -> Duration {
    Duration::from_millis(held.state.until_ms.saturating_sub(now_ms))
}

/// The wait after the `failures`th failure in a row: `base` doubled each time, at most
/// `MAX_BACKOFF`, then a random half of it taken off (jitter, so that webhooks failing together
/// do not retry together).
pub fn backoff(base: Duration, failures: u32) -> Duration {
    let doubled = base.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let capped = doubled.min(MAX_BACKOFF);
    capped.mul_f64(1.0 - rand::random::<f64>() / 2.0)
}

/// The body of a webhook request: the Standard Webhooks shape (`type`, `timestamp`, `data`) with
/// the event as `/events` answers it (`id` is its sequence, the SSE id), and who inserted it.
pub fn envelope(event: &Event) -> Vec<u8> {
    let timestamp = OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.timestamp) * 1_000_000)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_default();
    let body = json!({
        "type": event.event,
        "timestamp": timestamp,
        "data": {
            "id": event.seq,
            "event": event.event,
            "data": event.data,
            "timestamp": event.timestamp,
            "tenant": event.tenant_name,
            "username": event.username,
        },
    });
    serde_json::to_vec(&body).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_bound() {
        let base = Duration::from_millis(100);
        for failures in 1..40 {
            let full = base.saturating_mul(1 << (failures - 1).min(20)).min(MAX_BACKOFF);
            let wait = backoff(base, failures);
            assert!(
                wait <= full && wait >= full / 2,
                "{failures}: {wait:?} of {full:?}"
            );
        }
    }
}
