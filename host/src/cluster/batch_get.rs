//! Batch direct get (nats-server 2.11, ADR-31): many messages of a stream in one request, answered
//! by any of its replicas, with no consumer to create, ask about and forget.
//!
//! - `after`: the messages on a subject filter from a sequence on, oldest first;
//! - `newest_per_subject`: the newest message of each subject matching a filter (at most 1,024
//!   subjects; the server refuses more).
//!
//! A replica may be behind the stream's leader: what it sends is a prefix of the stream, never a
//! stream with holes. `newest_per_subject` says how far that prefix reached; for `after` the caller
//! checks past the last message on the leader. The replies are collected here until the server's
//! end-of-batch message.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;

use crate::storage::{StorageError, StorageResult};

/// Most messages asked for in one batch: a reply is held whole in memory before it is used.
pub const MOST_PER_BATCH: usize = 256;
/// Most bytes asked for in one batch.
const MOST_BYTES_PER_BATCH: usize = 4 << 20;
/// Longest wait for a batch to end.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One message of a batch.
pub struct Fetched {
    pub sequence: u64,
    pub payload: Bytes,
}

/// What a batch request brought back.
pub enum Batch {
    /// The messages, oldest first, and what the serving replica said at the end.
    Messages {
        messages: Vec<Fetched>,
        /// Matching messages it did not send (a size or count limit stopped it).
        pending: u64,
        /// For `newest_per_subject`: the replica's last sequence when it answered.
        up_to: Option<u64>,
    },
    /// Nothing matched.
    Nothing,
    /// More subjects matched than one `newest_per_subject` request may answer.
    TooManySubjects,
}

#[derive(Serialize)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_by_subj: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_last: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_bytes: Option<usize>,
}

/// Up to `count` (at most `MOST_PER_BATCH`) messages on `filter` from sequence `from` on, and
/// about `max_bytes` at most (the message that crosses it is sent).
pub async fn after(
    client: &async_nats::Client,
    stream: &stream::Stream,
    filter: &str,
    from: u64,
    count: usize,
    max_bytes: usize,
) -> StorageResult<Batch> {
    let request = Request {
        seq: Some(from.max(1)),
        next_by_subj: Some(filter),
        multi_last: None,
        batch: Some(count.clamp(1, MOST_PER_BATCH)),
        max_bytes: Some(max_bytes.clamp(1, MOST_BYTES_PER_BATCH)),
    };
    fetch(client, stream, &request).await
}

/// The newest message of each subject matching `filter`, oldest first, as far as the serving
/// replica's stream reaches (`up_to`).
pub async fn newest_per_subject(
    client: &async_nats::Client,
    stream: &stream::Stream,
    filter: &str,
) -> StorageResult<Batch> {
    let request = Request {
        seq: None,
        next_by_subj: None,
        multi_last: Some([filter]),
        batch: None,
        max_bytes: None,
    };
    fetch(client, stream, &request).await
}

async fn fetch(
    client: &async_nats::Client,
    stream: &stream::Stream,
    request: &Request<'_>,
) -> StorageResult<Batch> {
    let body = serde_json::to_vec(request).map_err(StorageError::unavailable)?;
    let subject = format!("$JS.API.DIRECT.GET.{}", stream.cached_info().config.name);
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(StorageError::unavailable)?;
    client
        .publish_with_reply(subject, inbox, body.into())
        .await
        .map_err(StorageError::unavailable)?;
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + BATCH_TIMEOUT;
    loop {
        let reply = match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(reply)) => reply,
            Ok(None) | Err(_) => {
                return Err(StorageError::Unavailable("a batch read timed out".into()));
            }
        };
        let status = reply.status.map(|status| status.as_u16());
        match status {
            // The end of the batch.
            Some(204) => {
                let headers = reply.headers.as_ref();
                return Ok(Batch::Messages {
                    messages,
                    pending: header_number(headers, "Nats-Num-Pending").unwrap_or(0),
                    up_to: header_number(headers, "Nats-UpTo-Sequence"),
                });
            }
            Some(404) => return Ok(Batch::Nothing),
            Some(413) => return Ok(Batch::TooManySubjects),
            Some(code) => {
                let said = reply.description.unwrap_or_default();
                return Err(StorageError::Unavailable(format!(
                    "a batch read was answered {code} {said}"
                )));
            }
            None => {}
        }
        let sequence = header_number(reply.headers.as_ref(), "Nats-Sequence")
            .ok_or_else(|| StorageError::Unavailable("a batch read's message has no sequence".into()))?;
        messages.push(Fetched {
            sequence,
            payload: reply.payload,
        });
    }
}

fn header_number(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}
