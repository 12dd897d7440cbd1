//! Publishing on a condition, safely on a replicated stream of nats-server 2.9.
//!
//! The natural tool, the per-subject check (`Nats-Expected-Last-Subject-Sequence`, which key-value
//! `create` and `update` also use), is made by a 2.9 stream leader against what it has already
//! applied: two publishes in flight at once can both pass it. Tests saw exactly that at three
//! replicas: two clients both "won" the same version. The stream-wide check
//! (`Nats-Expected-Last-Sequence`) counts publishes in flight, so it holds.
//!
//! So a conditional publish here: reads the stream's last sequence, prepares its message from the
//! leader's state (which may say "the condition fails"), and publishes expecting that last
//! sequence. If anything at all was published on the stream in between, it prepares again, a
//! bounded number of times.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;

use super::{Cluster, PUBLISH_DEADLINE};
use crate::storage::{StorageError, StorageResult};

/// Attempts of one conditional publish that lost to other writers on the same stream.
const ATTEMPTS: u32 = 40;

/// What a publish came to.
pub enum Published {
    /// Stored (or found stored already, for a repeated message id) at this stream sequence.
    At(u64),
    /// The stream's last sequence was not the expected one: someone else published first.
    Overtaken,
}

impl Cluster {
    /// Publishes `payload` on `subject`, retrying with the same message id (so that JetStream stores
    /// it once) while the stream has no leader or the acknowledgement does not come, up to
    /// `PUBLISH_DEADLINE`.
    pub async fn publish(
        &self,
        subject: &str,
        payload: Bytes,
        message_id: &str,
        expected_last_sequence: Option<u64>,
    ) -> StorageResult<Published> {
        let deadline = tokio::time::Instant::now() + PUBLISH_DEADLINE;
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut message = PublishMessage::build()
                .payload(payload.clone())
                .message_id(message_id);
            if let Some(sequence) = expected_last_sequence {
                message = message.expected_last_sequence(sequence);
            }
            let acknowledged = match self.jetstream.send_publish(subject.to_owned(), message).await {
                Ok(ack) => ack.await,
                Err(error) => Err(error),
            };
            match acknowledged {
                Ok(ack) => return Ok(Published::At(ack.sequence)),
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    return Ok(Published::Overtaken);
                }
                // No stream leader for a moment (an election), a timeout, a broken connection.
                Err(error) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::debug!(%error, "publish not acknowledged; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(error) => return Err(StorageError::unavailable(error)),
            }
        }
    }

    /// Publishes what `prepare` makes of the current state, provided nothing else is published on
    /// `stream` between its reading and the publish. `prepare` answers the payload and a value to
    /// hand back, or `None` when the condition fails (then nothing is published).
    pub async fn publish_if<T, F>(
        &self,
        stream: &Stream,
        subject: &str,
        message_id: &str,
        prepare: impl Fn() -> F,
    ) -> StorageResult<Option<(u64, T)>>
    where
        F: Future<Output = StorageResult<Option<(Bytes, T)>>>,
    {
        for attempt in 0..ATTEMPTS {
            let last = stream
                .get_info()
                .await
                .map_err(StorageError::unavailable)?
                .state
                .last_sequence;
            let Some((payload, value)) = prepare().await? else {
                return Ok(None);
            };
            match self.publish(subject, payload, message_id, Some(last)).await? {
                Published::At(sequence) => return Ok(Some((sequence, value))),
                // Spread the writers that lost out, so that they do not collide again in step.
                Published::Overtaken => tokio::time::sleep(jitter(attempt)).await,
            }
        }
        Err(StorageError::Unavailable(format!(
            "{subject}: still overtaken after {ATTEMPTS} attempts"
        )))
    }
}

/// A few milliseconds, growing with the attempt, varied by the clock's nanoseconds.
fn jitter(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    Duration::from_micros(u64::from(nanos % 2_000) + u64::from(attempt.min(10)) * 1_000)
}
