//! The event log on JetStream. An event is one message on `broker.ev.<tenant>.<name>`; its stream
//! sequence is its id, strictly increasing per tenant (the stream's sequence is global, so there
//! are gaps) and the same on every node.
//!
//! - Append publishes with the event's uuid as `Nats-Msg-Id`, so a retry after a lost
//!   acknowledgement stores it once, and answers only after JetStream acknowledged it (it is then
//!   on the configured replicas).
//! - An event whose guest read state is published only if its reads still hold, checked by the
//!   server: per subject when it read one name, against the whole stream when several (`cas`).
//!   A guest's reads go to the stream leader, so they see every acknowledged write.
//! - Each node tails the whole stream into its own fan-out, in stream order, once per event.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{Consumer, DeliverPolicy, push};
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::batch_get::{self, Batch};
use super::cas::{Expect, Published};
use super::{Cluster, subjects};
use crate::event_log::{Erase, EventLog, EventPage, HistoryPage, Keep, LatestReplay, PageStart};
use crate::fanout::Fanout;
use crate::filter::EventFilter;
use crate::idempotency::{Committed, IdempotencyKey, RecentKeys};
use crate::metrics::metrics;
use crate::model::{Event, LatestRead, NewEvent};
use crate::storage::{StorageError, StorageResult};

/// Longest wait for the next message of a read through a consumer (a batch has its own).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Times a replay or catch-up read is made again while the server answering it is behind the fence.
pub(super) const FENCE_ATTEMPTS: u32 = 10;
/// Failed replay or catch-up reads made again before the failure is answered.
const READ_FAILURES_RETRIED: u32 = 2;
/// Times a drained read's consumer is asked how far its server looked.
const REACH_CHECKS: usize = 4;
/// Reads through a consumer (history windows, an erasure's scan, a replay of over 1,024 names) a
/// node makes at once; more wait up to `READ_TIMEOUT` for one to end. nats-server 2.15 holds a
/// stream to 1,000 consumers by default, shared by every node.
const CONSUMER_READS: usize = 64;

/// How far a consumer's server looked in the stream, and how many messages it delivered.
#[derive(Clone, Copy, Default)]
struct Reach {
    stream_sequence: u64,
    delivered: u64,
}

/// Where a scanned message stands in its consumer's delivery.
struct Delivery {
    /// Matching messages left after it, as the serving server saw them.
    pending: u64,
    consumer_sequence: u64,
}

/// The next message of a scan, decoded, with its stored size and where it stands.
async fn next_event(messages: &mut push::Ordered) -> StorageResult<(Event, usize, Delivery)> {
    let message = match tokio::time::timeout(READ_TIMEOUT, messages.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(Some(Err(error))) => return Err(StorageError::unavailable(error)),
        Ok(None) | Err(_) => {
            return Err(StorageError::Unavailable("reading events timed out".into()));
        }
    };
    let info = message.info().map_err(StorageError::unavailable)?;
    let event = decode(&message.payload, info.stream_sequence)?;
    let delivery = Delivery {
        pending: info.pending,
        consumer_sequence: info.consumer_sequence,
    };
    Ok((event, message.payload.len(), delivery))
}

/// Where a replay or catch-up read starts.
#[derive(Clone, Copy)]
enum ReadFrom {
    /// The newest event of each name (a replay).
    NewestPerName,
    /// The events after this sequence (a catch-up).
    After(u64),
}

/// How a scan ended.
pub(super) enum Read {
    /// `each` asked to stop.
    Stopped,
    /// Nothing more was pending; with a fence, how far the serving server's stream reached.
    Drained { reached: Option<u64> },
}

pub struct JetStreamLog {
    cluster: Arc<Cluster>,
    /// The keys of events committed (by any node) since this node started, fed by its tail.
    recent: Arc<RecentKeys>,
    /// The stream sequence this node's tail has handed on.
    tailed: tokio::sync::watch::Receiver<u64>,
    /// Reads through a consumer of their own under way on this node (`CONSUMER_READS`).
    consumer_reads: tokio::sync::Semaphore,
}

impl JetStreamLog {
    /// The log, with this node's tail of the stream feeding `fanout` until `shutdown`.
    pub async fn start(
        cluster: Arc<Cluster>,
        fanout: Arc<Fanout>,
        shutdown: CancellationToken,
    ) -> StorageResult<Self> {
        let (_, after) = stream_bounds(&cluster).await?;
        let recent = Arc::new(RecentKeys::default());
        let (position, tailed) = tokio::sync::watch::channel(after);
        let feed = Feed {
            fanout,
            recent: recent.clone(),
            position,
        };
        tokio::spawn(tail(cluster.clone(), feed, after, shutdown));
        Ok(Self {
            cluster,
            recent,
            tailed,
            consumer_reads: tokio::sync::Semaphore::new(CONSUMER_READS),
        })
    }

    pub(super) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Waits until this node's tail has handed on everything the stream held when asked (so that
    /// what any node committed before is known here), for up to `READ_TIMEOUT`.
    async fn tail_caught_up(&self) -> StorageResult<()> {
        let (_, last) = self.bounds().await?;
        let mut tailed = self.tailed.clone();
        match tokio::time::timeout(READ_TIMEOUT, tailed.wait_for(|seq| *seq >= last)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StorageError::Unavailable("the event tail is behind".into())),
        }
    }

    /// The event at stream sequence `sequence`, read from the leader.
    async fn stored_at(&self, sequence: u64) -> StorageResult<Event> {
        let message = self
            .cluster
            .events
            .get_raw_message(sequence)
            .await
            .map_err(StorageError::unavailable)?;
        decode(&message.payload, sequence)
    }

    /// Publishes `event` with its message id (`message_id`): publishing the same event again
    /// within the de-duplication window stores nothing new and answers the first sequence.
    pub async fn publish(&self, event: &Event) -> StorageResult<u64> {
        match self.publish_once(event).await? {
            Published::At(sequence) | Published::Repeated(sequence) => Ok(sequence),
            Published::Overtaken => Err(StorageError::Unavailable(
                "an unconditional publish was refused".into(),
            )),
        }
    }

    async fn publish_once(&self, event: &Event) -> StorageResult<Published> {
        let subject = self.subject(&event.tenant_name, &event.event);
        self.cluster
            .publish(&subject, encode(event)?, &message_id(event), Expect::Nothing)
            .await
    }

    /// Publishes `event` provided that every read still holds at the publish, as the server
    /// checks it: reads of one name (the common case, a guest reading the name it writes) are a
    /// condition on that name's subject alone; reads of several names, a condition on the whole
    /// stream after checking each against the leader.
    async fn publish_if_reads_hold(&self, event: &Event, reads: &[LatestRead]) -> StorageResult<Published> {
        let subject = self.subject(&event.tenant_name, &event.event);
        let payload = encode(event)?;
        let message_id = message_id(event);
        let read_subjects: Vec<(String, u64)> = reads
            .iter()
            .map(|read| (self.subject(&event.tenant_name, &read.name), read.seq))
            .collect();
        let Some((read_subject, sequence)) = single_subject(&read_subjects) else {
            return self
                .publish_if_stream_unchanged(&subject, payload, &message_id, &read_subjects)
                .await
                .map(Published::At);
        };
        let expect = Expect::SubjectAt {
            subject: (read_subject != subject).then_some(read_subject),
            sequence,
        };
        match self
            .cluster
            .publish(&subject, payload, &message_id, expect)
            .await?
        {
            Published::Overtaken => Err(StorageError::StaleRead),
            published => Ok(published),
        }
    }

    /// Publishes `payload` provided that each of `reads` (subject, sequence) is the last message
    /// of its subject and nothing is published on the stream between that check and the publish.
    async fn publish_if_stream_unchanged(
        &self,
        subject: &str,
        payload: bytes::Bytes,
        message_id: &str,
        reads: &[(String, u64)],
    ) -> StorageResult<u64> {
        let payload = &payload;
        let reads_hold = || async move {
            for (read_subject, sequence) in reads {
                let newest = self
                    .cluster
                    .last_message(&self.cluster.events, read_subject)
                    .await?;
                if newest.map_or(0, |message| message.sequence) != *sequence {
                    return Ok(None);
                }
            }
            Ok(Some((payload.clone(), ())))
        };
        let published = self
            .cluster
            .publish_if_stream_unchanged(&self.cluster.events, subject, message_id, reads_hold)
            .await?;
        published
            .map(|(sequence, ())| sequence)
            .ok_or(StorageError::StaleRead)
    }

    /// Reads `tenant`'s events from `from` until none is left, or `limit` events or `max_bytes`
    /// were read: by batch direct get, or through an ordered consumer where a batch cannot answer
    /// (the newest of more names than one batch may ask about).
    ///
    /// Fenced: a read that ends for want of events must have been served by a server holding the
    /// stream at least up to this node's tail. A replica answering may still be catching up (the
    /// server lets it read at 90% synchronized); its short answer would end a replay or catch-up
    /// before events this node's streams have not been sent, and they would be missed. Such a read
    /// is made again, from the start.
    async fn read(
        &self,
        tenant: &str,
        from: ReadFrom,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<EventPage> {
        let fence = self.tail_position();
        let mut failures = 0;
        for attempt in 1..=FENCE_ATTEMPTS {
            let mut page = EventPage::default();
            let read = match from {
                ReadFrom::After(after) => {
                    self.read_batches_after(tenant, after, limit, max_bytes, &mut page)
                        .await
                }
                ReadFrom::NewestPerName => match self.read_newest_batch(tenant, &mut page).await {
                    Ok(Some(read)) => Ok(read),
                    Ok(None) => {
                        page = EventPage::default();
                        self.read_by_consumer(tenant, fence, &mut page).await
                    }
                    Err(error) => Err(error),
                },
            };
            // A server that is restarting may not answer: the read goes again, likely elsewhere.
            let read = match read {
                Err(StorageError::Unavailable(reason)) if failures < READ_FAILURES_RETRIED => {
                    failures += 1;
                    tracing::debug!(reason, failures, "a read failed; reading again");
                    continue;
                }
                read => read?,
            };
            let read_subjects = [subjects::tenant_subjects(tenant)];
            if self
                .reached_far_enough(Some(&read_subjects), read, fence, attempt)
                .await?
            {
                return Ok(page);
            }
        }
        Err(kept_behind(fence))
    }

    /// Reads `tenant`'s events after `after` into `page`, a batch at a time, until none is left or
    /// the page is full. A drained read reached its last event (or `after`): whether the leader
    /// holds more of the tenant's up to the fence is for the caller to ask.
    async fn read_batches_after(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
        page: &mut EventPage,
    ) -> StorageResult<Read> {
        let Some(from) = after.checked_add(1) else {
            return Ok(Read::Drained { reached: Some(after) });
        };
        let (count, bytes) = (
            limit.saturating_sub(page.events.len()),
            max_bytes.saturating_sub(page.bytes),
        );
        let subject = subjects::tenant_subjects(tenant);
        let read = self.read_batches(&subject, from, count, bytes, |event, size| {
            page.bytes += size;
            page.events.push(event);
            if page.events.len() >= limit || page.bytes >= max_bytes {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        Ok(read.await?.0)
    }

    /// Hands each event on `subject` from sequence `from` on, with its stored size, to `each`
    /// until it breaks or the serving replica has none left, by batch direct gets of `count`
    /// messages and about `bytes` each; also answers how many matched from `from` to that
    /// replica's end. A drained read reached its last event (or `from` - 1): whether the leader
    /// holds more up to a fence is for the caller to ask.
    pub(super) async fn read_batches(
        &self,
        subject: &str,
        from: u64,
        count: usize,
        bytes: usize,
        mut each: impl FnMut(Event, usize) -> ControlFlow<()> + Send,
    ) -> StorageResult<(Read, u64)> {
        metrics().cluster_read("batch");
        let cluster = &self.cluster;
        let (mut next, mut matching) = (from.max(1), None);
        loop {
            let batch = batch_get::after(&cluster.client, &cluster.events, subject, next, count, bytes);
            let (messages, pending) = match batch.await? {
                Batch::Messages {
                    messages, pending, ..
                } => (messages, pending),
                Batch::Nothing | Batch::TooManySubjects => (Vec::new(), 0),
            };
            let matching = *matching.get_or_insert(messages.len() as u64 + pending);
            for message in messages {
                next = message.sequence.saturating_add(1);
                let event = decode(&message.payload, message.sequence)?;
                if each(event, message.payload.len()).is_break() {
                    return Ok((Read::Stopped, matching));
                }
            }
            if pending == 0 {
                return Ok((
                    Read::Drained {
                        reached: Some(next - 1),
                    },
                    matching,
                ));
            }
        }
    }

    /// Reads the newest event of each of `tenant`'s names into `page`, oldest first, in one batch;
    /// `None` if one batch cannot hold them all (more names than the server answers at once, or
    /// more bytes than it sends in one reply).
    async fn read_newest_batch(&self, tenant: &str, page: &mut EventPage) -> StorageResult<Option<Read>> {
        let filter = subjects::tenant_subjects(tenant);
        let cluster = &self.cluster;
        match batch_get::newest_per_subject(&cluster.client, &cluster.events, &filter).await? {
            // The serving replica holds none of the tenant's events.
            Batch::Nothing => {
                metrics().cluster_read("batch");
                Ok(Some(Read::Drained { reached: Some(0) }))
            }
            Batch::Messages {
                messages,
                pending: 0,
                up_to,
            } => {
                metrics().cluster_read("batch");
                for message in messages {
                    keep(page, message)?;
                }
                let newest = page.events.last().map_or(0, |event| event.seq);
                Ok(Some(Read::Drained {
                    reached: Some(up_to.unwrap_or(newest)),
                }))
            }
            Batch::Messages { .. } | Batch::TooManySubjects => Ok(None),
        }
    }

    /// Reads the newest event of each of `tenant`'s names into `page` through an ordered consumer.
    async fn read_by_consumer(&self, tenant: &str, fence: u64, page: &mut EventPage) -> StorageResult<Read> {
        metrics().cluster_read("consumer");
        self.scan(
            vec![subjects::tenant_subjects(tenant)],
            DeliverPolicy::LastPerSubject,
            fence,
            |event, size| {
                page.bytes += size;
                page.events.push(event);
                ControlFlow::Continue(())
            },
        )
        .await
    }

    /// Whether a read that ended as `read` covered what it is about up to `fence`: the events on
    /// `read_subjects`, or with `None` the whole stream. If not, counts a stale read and waits a
    /// little (longer each `attempt`) before the caller makes it again.
    pub(super) async fn reached_far_enough(
        &self,
        read_subjects: Option<&[String]>,
        read: Read,
        fence: u64,
        attempt: u32,
    ) -> StorageResult<bool> {
        let reached = match read {
            Read::Stopped | Read::Drained { reached: None } => return Ok(true),
            Read::Drained {
                reached: Some(reached),
            } => reached,
        };
        if reached >= fence {
            return Ok(true);
        }
        // The serving server had everything up to where it looked (a filtered read reaches its
        // last match, not the stream's last message); beyond that only messages on other subjects,
        // or none, up to the fence: nothing was missed.
        if let Some(read_subjects) = read_subjects
            && !self.has_events_in(read_subjects, reached + 1, fence).await?
        {
            return Ok(true);
        }
        metrics().stale_reads.inc();
        tracing::debug!(
            reached,
            fence,
            attempt,
            "a read was served by a server behind this node; reading again"
        );
        tokio::time::sleep(Duration::from_millis(20) * attempt).await;
        Ok(false)
    }

    /// Hands each event on `filter_subjects` (at least one, none overlapping another) from
    /// `deliver_policy` on, with its stored size, to `each` until it breaks or nothing is pending,
    /// through an ordered consumer of its own. With a `fence` above 0, a drained read says how far
    /// the serving server's stream reached.
    pub(super) async fn scan(
        &self,
        filter_subjects: Vec<String>,
        deliver_policy: DeliverPolicy,
        fence: u64,
        each: impl FnMut(Event, usize) -> ControlFlow<()> + Send,
    ) -> StorageResult<Read> {
        let (read, _) = self
            .scan_counting(filter_subjects, deliver_policy, fence, each)
            .await?;
        Ok(read)
    }

    /// `scan`, also answering how many messages matched from where it started to the stream's
    /// end when it started (whether it read them all or not).
    pub(super) async fn scan_counting(
        &self,
        mut filter_subjects: Vec<String>,
        deliver_policy: DeliverPolicy,
        fence: u64,
        each: impl FnMut(Event, usize) -> ControlFlow<()> + Send,
    ) -> StorageResult<(Read, u64)> {
        // One subject goes in the consumer's name on the server's API (older servers take only that).
        let filter_subject = match filter_subjects.as_slice() {
            [_] => filter_subjects.pop().unwrap_or_default(),
            _ => String::new(),
        };
        let _permit = tokio::time::timeout(READ_TIMEOUT, self.consumer_reads.acquire())
            .await
            .map_err(|_| StorageError::Unavailable("too many reads through consumers at once".into()))?
            .map_err(StorageError::unavailable)?;
        let consumer = self
            .cluster
            .events
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.cluster.client.new_inbox(),
                filter_subject,
                filter_subjects,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(StorageError::unavailable)?;
        let name = consumer.cached_info().name.clone();
        let read = self.drain(consumer, &name, fence, each).await;
        self.forget_consumer(name);
        read
    }

    /// `scan_counting`'s reading of its consumer's messages (dropped when it returns).
    async fn drain(
        &self,
        consumer: Consumer<push::OrderedConfig>,
        name: &str,
        fence: u64,
        mut each: impl FnMut(Event, usize) -> ControlFlow<()> + Send,
    ) -> StorageResult<(Read, u64)> {
        let matching = consumer.cached_info().num_pending;
        let mut pending = matching;
        let mut messages = consumer.messages().await.map_err(StorageError::unavailable)?;
        // The consumer sequence of the last message handed to `each`.
        let mut consumed = 0;
        while pending > 0 {
            let (event, size, info) = next_event(&mut messages).await?;
            (pending, consumed) = (info.pending, info.consumer_sequence);
            if each(event, size).is_break() {
                return Ok((Read::Stopped, matching));
            }
        }
        if fence == 0 {
            return Ok((Read::Drained { reached: None }, matching));
        }
        // The server may have delivered more since (a follower catching up delivers as it goes):
        // take what it sent up to where it reached, so that the read covers all of it.
        let reach = self.consumer_reach(name, fence).await;
        while consumed < reach.delivered {
            let (event, size, info) = next_event(&mut messages).await?;
            consumed = info.consumer_sequence;
            if each(event, size).is_break() {
                return Ok((Read::Stopped, matching));
            }
        }
        let reached = Some(reach.stream_sequence);
        Ok((Read::Drained { reached }, matching))
    }

    /// Deletes a finished read's consumer, in the background. Left alone, an ordered consumer
    /// stays 30 s after its reader went, and nats-server 2.15 holds a stream to 1,000 consumers
    /// by default: pages read faster than that would be refused.
    fn forget_consumer(&self, name: String) {
        let events = self.cluster.events.clone();
        tokio::spawn(async move {
            if let Err(error) = events.delete_consumer(&name).await {
                tracing::debug!(%error, consumer = name, "could not delete a read's consumer; it expires in 30 s");
            }
        });
    }

    /// The subject of `tenant`'s events named `name`, in this stream's form.
    fn subject(&self, tenant: &str, name: &str) -> String {
        self.cluster.name_tokens.event_subject(tenant, name)
    }

    /// The stream sequence this node's tail has handed on: what any read here must reach.
    pub(super) fn tail_position(&self) -> u64 {
        *self.tailed.borrow()
    }

    /// Whether the stream leader holds an event on one of `subjects` numbered `from` to `to`
    /// (one request per subject).
    async fn has_events_in(&self, subjects: &[String], from: u64, to: u64) -> StorageResult<bool> {
        for subject in subjects {
            let next = (self.cluster.events.raw_message_builder())
                .sequence(from)
                .next_by_subject(subject.clone())
                .send()
                .await;
            match next {
                Ok(message) if message.sequence <= to => return Ok(true),
                Ok(_) => {}
                Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                Err(error) => return Err(StorageError::unavailable(error)),
            }
        }
        Ok(false)
    }

    /// How far the server holding consumer `name` has looked in the stream (the stream sequence
    /// of the last message it delivered: with a filter, what it skipped after that does not
    /// count), and how many messages it delivered. Asked again a few times while short of
    /// `fence` and still delivering (a follower catching up); a filtered read whose last match is
    /// below the fence stops delivering at once. Nothing reached if the consumer is gone.
    async fn consumer_reach(&self, name: &str, fence: u64) -> Reach {
        let mut reach: Option<Reach> = None;
        for _ in 0..REACH_CHECKS {
            let Ok(info) = self.cluster.events.consumer_info(name).await else {
                return Reach::default();
            };
            let now = Reach {
                stream_sequence: info.delivered.stream_sequence,
                delivered: info.delivered.consumer_sequence,
            };
            let still = reach.is_some_and(|before| before.delivered == now.delivered);
            if now.stream_sequence >= fence || still {
                return now;
            }
            reach = Some(now);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        reach.unwrap_or_default()
    }

    /// The stream's first and last sequences; the last at least as far as this node's tail has
    /// handed on. While the stream has no leader, a replica still catching up may answer with its
    /// own state, lower than that: a newest-first page or an erasure fenced on it would stop short
    /// (likely why a history page in the fault test once came back empty).
    pub(super) async fn bounds(&self) -> StorageResult<(u64, u64)> {
        let (first, last) = stream_bounds(&self.cluster).await?;
        Ok((first, last.max(self.tail_position())))
    }
}

/// The answer to a read that kept being served by a server behind `fence`.
pub(super) fn kept_behind(fence: u64) -> StorageError {
    StorageError::Unavailable(format!("reads kept coming from a server behind sequence {fence}"))
}

/// The event stream's first and last sequences, as its leader has them.
async fn stream_bounds(cluster: &Cluster) -> StorageResult<(u64, u64)> {
    let info = cluster
        .events
        .get_info()
        .await
        .map_err(StorageError::unavailable)?;
    Ok((info.state.first_sequence, info.state.last_sequence))
}

#[async_trait::async_trait]
impl EventLog for JetStreamLog {
    async fn append(&self, mut new: NewEvent) -> StorageResult<Arc<Event>> {
        let reads = std::mem::take(&mut new.reads);
        let mut event = Event::from_new(new, 0);
        let published = match reads.is_empty() {
            true => self.publish_once(&event).await?,
            false => self.publish_if_reads_hold(&event, &reads).await?,
        };
        event.seq = match published {
            Published::At(sequence) => sequence,
            // The client's key was used within the window: answer the event stored with it.
            Published::Repeated(sequence) if event.idempotency_key.is_some() => {
                return self.stored_at(sequence).await.map(Arc::new);
            }
            Published::Repeated(sequence) => sequence,
            Published::Overtaken => {
                return Err(StorageError::Unavailable(
                    "an unconditional publish was refused".into(),
                ));
            }
        };
        Ok(Arc::new(event))
    }

    async fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<EventPage> {
        self.read(tenant, ReadFrom::After(after), limit, max_bytes).await
    }

    async fn history(
        &self,
        tenant: &str,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        self.history_page(tenant, filter, start, limit, max_bytes).await
    }

    async fn latest_events(&self, tenant: &str) -> StorageResult<LatestReplay> {
        let page = self
            .read(tenant, ReadFrom::NewestPerName, usize::MAX, usize::MAX)
            .await?;
        let mut events = page.events;
        events.sort_by_key(|event| event.seq);
        // Live events up to the newest one read are covered: any older one of a name was replaced.
        let last_seq = events.last().map_or(0, |event| event.seq);
        Ok(LatestReplay { events, last_seq })
    }

    async fn newest_seq(&self, _tenant: &str) -> StorageResult<u64> {
        // The stream's last sequence is at or above every tenant's newest.
        Ok(self.bounds().await?.1)
    }

    async fn latest_of(&self, tenant: &str, name: &str) -> StorageResult<Option<Event>> {
        // From the leader: a replica answering a direct get may not have applied the caller's own
        // acknowledged insert yet, and a guest judging on it would refuse a valid next version.
        let subject = self.subject(tenant, name);
        let message = self.cluster.last_message(&self.cluster.events, &subject).await?;
        message
            .map(|message| decode(&message.payload, message.sequence))
            .transpose()
    }

    async fn committed_with(&self, key: &IdempotencyKey) -> StorageResult<Option<Event>> {
        // A retry may reach this node before its tail saw the first attempt, stored by another.
        self.tail_caught_up().await?;
        let Some(at) = self.recent.get(key) else {
            return Ok(None);
        };
        let event = self.stored_at(at.seq).await?;
        Ok(Some(event).filter(|event| event.idempotency_key.as_ref() == Some(key)))
    }

    async fn erase(&self, which: Erase) -> StorageResult<u64> {
        let username = match which {
            // One purge of the tenant's subjects on every replica.
            Erase::Tenant(tenant) => {
                let purge = self
                    .cluster
                    .events
                    .purge()
                    .filter(subjects::tenant_subjects(&tenant));
                let purged = purge.await.map_err(StorageError::unavailable)?;
                return Ok(purged.purged);
            }
            Erase::User(username) => username,
        };
        // A user's events are spread over the names of every tenant it inserted in: find them by
        // reading the stream once, then erase each (the server overwrites a deleted message). The
        // read must reach the stream's last sequence as the leader has it now: one served by a
        // follower behind it would miss the newest of them, and is made again.
        let (_, fence) = self.bounds().await?;
        let everything = format!("{}.>", subjects::EVENTS_PREFIX);
        let mut attempt = 0;
        let doomed = loop {
            attempt += 1;
            let mut doomed = Vec::new();
            let read = self.scan(vec![everything.clone()], DeliverPolicy::All, fence, |event, _| {
                if event.username == username {
                    doomed.push(event.seq);
                }
                ControlFlow::Continue(())
            });
            if self.reached_far_enough(None, read.await?, fence, attempt).await? {
                break doomed;
            }
            if attempt == FENCE_ATTEMPTS {
                return Err(kept_behind(fence));
            }
        };
        for sequence in &doomed {
            let deleted = self.cluster.events.delete_message(*sequence).await;
            deleted.map_err(StorageError::unavailable)?;
        }
        Ok(doomed.len() as u64)
    }

    async fn trim(&self, keep: Keep) -> StorageResult<u64> {
        self.trim_stream(keep).await
    }

    async fn horizon(&self, tenant: &str) -> StorageResult<u64> {
        self.stored_horizon(tenant).await
    }

    async fn stored_bytes(&self, _tenant: &str) -> StorageResult<Option<u64>> {
        // JetStream counts bytes per stream, not per subject: `--tenant_max_bytes` is LMDB's.
        Ok(None)
    }

    async fn stopped(&self) {
        // NATS connections recover by themselves: the log never stops for good.
        std::future::pending().await
    }
}

/// The message id an event is published with: its client's `Idempotency-Key` (scoped), else its
/// uuid, so that a publish retried after a lost acknowledgement is stored once either way.
fn message_id(event: &Event) -> String {
    match &event.idempotency_key {
        Some(key) => key.as_str().to_owned(),
        None => event.id.to_string(),
    }
}

/// The one subject all of `reads` are about, with the sequence read there; `None` when they name
/// several (or, contradicting each other, one subject at two sequences).
fn single_subject(reads: &[(String, u64)]) -> Option<(&str, u64)> {
    let (first, rest) = reads.split_first()?;
    rest.iter()
        .all(|read| read == first)
        .then_some((first.0.as_str(), first.1))
}

fn encode(event: &Event) -> StorageResult<bytes::Bytes> {
    Ok(serde_json::to_vec(event)
        .map_err(StorageError::unavailable)?
        .into())
}

/// Adds a batch's `message` to `page`, decoded, with its stored size.
fn keep(page: &mut EventPage, message: batch_get::Fetched) -> StorageResult<()> {
    page.bytes += message.payload.len();
    page.events.push(decode(&message.payload, message.sequence)?);
    Ok(())
}

fn decode(payload: &[u8], seq: u64) -> StorageResult<Event> {
    let mut event: Event = serde_json::from_slice(payload)
        .map_err(|e| StorageError::Unavailable(format!("an undecodable event: {e}")))?;
    event.seq = seq;
    Ok(event)
}

/// Hands every event after `after` to this node's fan-out, in stream order, exactly once: an
/// ordered consumer seeded at an existing message (so that its own re-creation after a reconnect
/// resumes after what it saw), re-created here whenever it fails, and a sequence guard.
/// Where the tail hands each committed event: the live fan-out, the recent idempotency keys, and
/// the position reached.
struct Feed {
    fanout: Arc<Fanout>,
    recent: Arc<RecentKeys>,
    position: tokio::sync::watch::Sender<u64>,
}

impl Feed {
    /// Hands on the event in `message`, at stream sequence `seq`. Only its subject and headers are
    /// read unless this node has streams of its tenant: most nodes see most tenants' events and
    /// serve few of them.
    fn hand_on(&self, message: &async_nats::jetstream::Message, seq: u64) {
        let Some(tenant) = subjects::tenant_of(&message.subject) else {
            tracing::error!(subject = %message.subject, seq, "skipping a message outside the event subjects");
            return;
        };
        let key = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .and_then(|id| IdempotencyKey::from_message_id(id.as_str()));
        if let Some(key) = key {
            self.recent.record([(
                &key,
                Committed {
                    tenant: tenant.clone(),
                    seq,
                },
            )]);
        }
        if !self.fanout.has_streams(&tenant) {
            return;
        }
        match decode(&message.payload, seq) {
            Ok(event) => self.fanout.publish([&event]),
            Err(error) => tracing::error!(%error, seq, "skipping an event the tail cannot read"),
        }
    }
}

async fn tail(cluster: Arc<Cluster>, feed: Feed, mut after: u64, shutdown: CancellationToken) {
    loop {
        match open_tail(&cluster, after).await {
            Ok(mut messages) => loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = messages.next() => next,
                };
                let message = match next {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the live event tail failed; re-creating it");
                        break;
                    }
                    None => break,
                };
                let Ok(info) = message.info() else { continue };
                let seq = info.stream_sequence;
                if seq <= after {
                    continue;
                }
                after = seq;
                // The position moves first: a stream that joins after this event was handed on
                // reads it from the store, as its fence is at least this event.
                feed.position.send_replace(seq);
                feed.hand_on(&message, seq);
            },
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "could not start the live event tail; retrying"
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// An ordered consumer over the whole stream from message `after` (already seen) on.
async fn open_tail(cluster: &Cluster, after: u64) -> anyhow::Result<push::Ordered> {
    let deliver_policy = match after {
        0 => DeliverPolicy::All,
        seen => DeliverPolicy::ByStartSequence { start_sequence: seen },
    };
    let consumer = cluster
        .events
        .create_consumer(push::OrderedConfig {
            deliver_subject: cluster.client.new_inbox(),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}
