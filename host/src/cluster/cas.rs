//! Publishing on a condition that the server enforces.
//!
//! The condition is per subject: `Nats-Expected-Last-Subject-Sequence` (with
//! `Nats-Expected-Last-Subject-Sequence-Subject` when the subject checked is not the one
//! published). From nats-server 2.11 the stream leader counts publishes still in flight on that
//! exact subject, so of several racing writers exactly one wins (2.9 let several win:
//! nats-server#4320; `server_version` refuses servers that old). A condition on one subject
//! contends only with writes to that subject: a user's key, or the event name a guest read.
//!
//! The per-subject check names exact subjects only (a wildcard one is not counted in flight), so
//! a guest that read several names is checked against the whole stream instead
//! (`Nats-Expected-Last-Sequence`, `publish_if_stream_unchanged`).

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;

use super::{Cluster, PUBLISH_DEADLINE};
use crate::storage::{StorageError, StorageResult};

/// Attempts of one conditional publish that lost to other writers of what it checks: for a key,
/// writers of that key; for the whole stream, every writer.
const ATTEMPTS: u32 = 40;

/// What a publish expects of the stream.
#[derive(Clone, Copy)]
pub enum Expect<'a> {
    Nothing,
    /// The last message on `subject` (on the published subject when `None`) is at `sequence`
    /// (0: there is none).
    SubjectAt {
        subject: Option<&'a str>,
        sequence: u64,
    },
    /// The stream's last message is at this sequence.
    StreamAt(u64),
}

/// Room left in a message for its headers (message id, expectations) under the server's
/// `max_payload`, which counts headers and payload together.
const HEADER_ROOM: usize = 1024;

/// Names the subject a `Nats-Expected-Last-Subject-Sequence` is about, when not the published one.
const EXPECTED_SUBJECT_HEADER: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// What a publish came to.
pub enum Published {
    /// Stored at this stream sequence.
    At(u64),
    /// A message with the same id was stored within the de-duplication window, at this sequence:
    /// nothing new was stored.
    Repeated(u64),
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
        expect: Expect<'_>,
    ) -> StorageResult<Published> {
        // Permanent refusals are answered as such, never retried: too large for the server...
        let limit = self.client.server_info().max_payload.saturating_sub(HEADER_ROOM);
        if payload.len() > limit {
            return Err(StorageError::TooLarge(limit));
        }
        let deadline = tokio::time::Instant::now() + PUBLISH_DEADLINE;
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut message = PublishMessage::build()
                .payload(payload.clone())
                .message_id(message_id);
            match expect {
                Expect::Nothing => {}
                Expect::SubjectAt { subject, sequence } => {
                    message = message.expected_last_subject_sequence(sequence);
                    if let Some(subject) = subject {
                        message = message.header(EXPECTED_SUBJECT_HEADER, subject);
                    }
                }
                Expect::StreamAt(sequence) => message = message.expected_last_sequence(sequence),
            }
            // Each attempt ends by the deadline too, so the whole publish does.
            let attempt = async {
                match self.jetstream.send_publish(subject.to_owned(), message).await {
                    Ok(ack) => ack.await,
                    Err(error) => Err(error),
                }
            };
            let Ok(acknowledged) = tokio::time::timeout_at(deadline, attempt).await else {
                return Err(StorageError::Unavailable(format!(
                    "no acknowledgement within {PUBLISH_DEADLINE:?}"
                )));
            };
            match acknowledged {
                Ok(ack) if ack.duplicate => return Ok(Published::Repeated(ack.sequence)),
                Ok(ack) => return Ok(Published::At(ack.sequence)),
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    return Ok(Published::Overtaken);
                }
                Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(StorageError::TooLarge(limit));
                }
                // ... or a full stream (its `max_bytes`, discarding new messages).
                Err(error) if is_full(&error) => {
                    tracing::error!(%error, subject, "a JetStream stream is full");
                    return Err(StorageError::Full);
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

    /// Publishes on `subject` what `prepare` makes of the last message there (read from the
    /// leader), provided nothing else is published on `subject` in between: a compare-and-set of
    /// one key, which contends only with writers of that key. `prepare` answers the payload and a
    /// value to hand back, or `None` when the condition fails (then nothing is published).
    pub async fn publish_if_subject_unchanged<T, F>(
        &self,
        stream: &Stream,
        subject: &str,
        message_id: &str,
        prepare: impl Fn(Option<StreamMessage>) -> F,
    ) -> StorageResult<Option<(u64, T)>>
    where
        F: Future<Output = StorageResult<Option<(Bytes, T)>>>,
    {
        for attempt in 0..ATTEMPTS {
            let last = self.last_message(stream, subject).await?;
            let sequence = last.as_ref().map_or(0, |message| message.sequence);
            let Some((payload, value)) = prepare(last).await? else {
                return Ok(None);
            };
            let expect = Expect::SubjectAt {
                subject: None,
                sequence,
            };
            match self.publish(subject, payload, message_id, expect).await? {
                Published::At(sequence) | Published::Repeated(sequence) => {
                    return Ok(Some((sequence, value)));
                }
                Published::Overtaken => tokio::time::sleep(jitter(attempt)).await,
            }
        }
        Err(StorageError::Unavailable(format!(
            "{subject}: still overtaken by writers of the same key after {ATTEMPTS} attempts"
        )))
    }

    /// Publishes what `prepare` makes of the current state, provided nothing else is published on
    /// `stream` between its reading and the publish: for a condition on several subjects. `prepare` answers the payload and a value to
    /// hand back, or `None` when the condition fails (then nothing is published).
    pub async fn publish_if_stream_unchanged<T, F>(
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
            match self
                .publish(subject, payload, message_id, Expect::StreamAt(last))
                .await?
            {
                Published::At(sequence) | Published::Repeated(sequence) => {
                    return Ok(Some((sequence, value)));
                }
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

/// Whether the server refused a publish because the stream reached its limits.
fn is_full(error: &async_nats::jetstream::context::PublishError) -> bool {
    let text = error.to_string();
    text.contains("maximum bytes exceeded") || text.contains("maximum messages exceeded")
}
