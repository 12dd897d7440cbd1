//! Retention on JetStream (`--retain_age`, `--retain_per_name`), with the rules LMDB keeps
//! (`store/retention.rs`): an event goes when it is older than the age or beyond the newest N of
//! its name, and the newest event of a name never goes.
//!
//! Each event name of a tenant is one subject, so a name's events are the subject's messages in
//! order, and what may go is always a prefix of them. A pass lists the subjects with their counts,
//! walks the removable prefix of each subject that holds more than one message (headers only: the
//! sequence and the time the server stored it), raises the tenant's horizon to the highest
//! sequence it will remove, and only then purges each prefix (a purge by subject up to a
//! sequence), so that no resume from below a removed event is ever taken as exact.
//!
//! An event sent with an idempotency key stays while a retry may still ask for it (`Keep`): the
//! server would answer the retry with a sequence no longer there.
//!
//! JetStream's own limits would not do: `max_age` removes the newest of a name too, and
//! `max_msgs_per_subject` removes without telling Broker what, so no horizon could be kept.
//!
//! The horizon of each tenant is a value in the `broker_meta` bucket, raised by compare-and-set:
//! every node runs the pass, and nodes that race remove the same prefixes and agree on it.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, push};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream;
use futures_util::{StreamExt, TryStreamExt};

use super::events::JetStreamLog;
use super::{Cluster, bucket_subject, subjects};
use crate::event_log::Keep;
use crate::idempotency::IdempotencyKey;
use crate::storage::{StorageError, StorageResult};

/// Longest wait for the next message of a walk over a subject.
const WALK_TIMEOUT: Duration = Duration::from_secs(5);

impl JetStreamLog {
    /// One retention pass over the whole stream; answers how many events it removed.
    pub(super) async fn trim_stream(&self, keep: Keep) -> StorageResult<u64> {
        let cluster = self.cluster();
        let mut tenants: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        let listed = cluster
            .events
            .info_with_subjects(format!("{}.>", subjects::EVENTS_PREFIX))
            .await;
        let mut listed = listed.map_err(StorageError::unavailable)?;
        while let Some((subject, count)) = listed.try_next().await.map_err(StorageError::unavailable)? {
            // One message is the newest of its name: it stays.
            if count < 2 {
                continue;
            }
            if let Some(tenant) = subjects::tenant_of(&subject) {
                tenants.entry(tenant).or_default().push((subject, count as u64));
            }
        }
        let mut removed = 0;
        for (tenant, names) in tenants {
            let mut prefixes = Vec::new();
            for (subject, count) in names {
                if let Some(last) = removable_prefix(cluster, &subject, count, keep).await? {
                    prefixes.push((subject, last));
                }
            }
            let Some(horizon) = prefixes.iter().map(|(_, last)| *last).max() else {
                continue;
            };
            raise_horizon(cluster, &tenant, horizon).await?;
            for (subject, last) in prefixes {
                let purge = cluster.events.purge().filter(subject).sequence(last + 1);
                removed += purge.await.map_err(StorageError::unavailable)?.purged;
            }
        }
        Ok(removed)
    }

    /// The highest sequence retention removed from `tenant` (0: none).
    pub(super) async fn stored_horizon(&self, tenant: &str) -> StorageResult<u64> {
        let cluster = self.cluster();
        let subject = horizon_subject(cluster, tenant);
        let stored = cluster.last_message(&cluster.meta_stream, &subject).await?;
        Ok(stored.as_ref().map_or(0, horizon_in))
    }
}

/// The sequence of the last message of `subject`'s removable prefix, if any: of its `count`
/// messages (oldest first), those older than `keep.before_ms` or beyond the newest
/// `keep.per_name`, never the last one.
async fn removable_prefix(
    cluster: &Cluster,
    subject: &str,
    count: u64,
    keep: Keep,
) -> StorageResult<Option<u64>> {
    let removable = |index: u64, stored_ms: u64| {
        index + 1 < count
            && (keep
                .per_name
                .is_some_and(|newest| index + u64::from(newest) < count)
                || keep.before_ms.is_some_and(|before| stored_ms < before))
    };
    if keep.per_name.is_none_or(|newest| count <= u64::from(newest)) {
        // Only the age can remove any of these: nothing to walk unless the first one is old.
        let Some(before) = keep.before_ms else {
            return Ok(None);
        };
        if first_stored_ms(cluster, subject)
            .await?
            .is_none_or(|first| first >= before)
        {
            return Ok(None);
        }
    }
    let consumer = cluster
        .events
        .create_consumer(push::OrderedConfig {
            deliver_subject: cluster.client.new_inbox(),
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::All,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(StorageError::unavailable)?;
    let mut messages = consumer.messages().await.map_err(StorageError::unavailable)?;
    let mut last = None;
    for index in 0..count {
        let message = match tokio::time::timeout(WALK_TIMEOUT, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => return Err(StorageError::unavailable(error)),
            Ok(None) | Err(_) => {
                return Err(StorageError::Unavailable(
                    "walking a name's events timed out".into(),
                ));
            }
        };
        let info = message.info().map_err(StorageError::unavailable)?;
        let stored_ms = millis(info.published);
        // Sent with a client's key and young enough for its retry: it stays, and so (being a
        // prefix) does everything after it.
        let keyed = (message.headers.as_ref())
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .is_some_and(|id| IdempotencyKey::from_message_id(id.as_str()).is_some());
        let retry_may_ask = keyed && keep.keyed_since_ms.is_some_and(|since| stored_ms >= since);
        if retry_may_ask || !removable(index, stored_ms) {
            break;
        }
        last = Some(info.stream_sequence);
        if info.pending == 0 {
            break;
        }
    }
    Ok(last)
}

/// When the first message of `subject` was stored (ms since the epoch), if it has one.
async fn first_stored_ms(cluster: &Cluster, subject: &str) -> StorageResult<Option<u64>> {
    let first = (cluster.events.raw_message_builder())
        .sequence(1)
        .next_by_subject(subject.to_owned())
        .send()
        .await;
    match first {
        Ok(message) => Ok(Some(millis(message.time))),
        Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(error) => Err(StorageError::unavailable(error)),
    }
}

fn millis(time: async_nats::datetime::DateTime) -> u64 {
    u64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Raises `tenant`'s horizon to `horizon` unless it is there already.
async fn raise_horizon(cluster: &Cluster, tenant: &str, horizon: u64) -> StorageResult<()> {
    let subject = horizon_subject(cluster, tenant);
    let raise = |stored: Option<StreamMessage>| async move {
        let higher = stored.as_ref().map_or(0, horizon_in) < horizon;
        Ok(higher.then(|| (bytes::Bytes::from(horizon.to_string()), ())))
    };
    // The same id for the same horizon: two nodes raising it alike store it once.
    let id = format!("horizon.{}.{horizon}", subjects::token(tenant));
    cluster
        .publish_if_subject_unchanged(&cluster.meta_stream, &subject, &id, raise)
        .await
        .map(drop)
}

fn horizon_subject(cluster: &Cluster, tenant: &str) -> String {
    bucket_subject(
        &cluster.meta_stream,
        &subjects::token(&format!("horizon/{tenant}")),
    )
}

fn horizon_in(message: &StreamMessage) -> u64 {
    std::str::from_utf8(&message.payload)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}
