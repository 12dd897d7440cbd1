//! The single event writer: one thread owns LMDB write transactions for events and commits every
//! insert waiting at that moment in one transaction (group commit). An insert is answered only after
//! its commit, and handed to fan-out only after its commit, in commit order. An insert whose guest
//! read state that changed before the commit is left out of it (`StorageError::StaleRead`). An
//! insert whose `Idempotency-Key` was committed within the window is answered with that event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::idempotency::{Committed, IdempotencyKey, RecentKeys};
use crate::metrics::metrics;
use crate::model::{Event, NewEvent};
use crate::storage::{StorageError, StorageResult};

/// Most inserts committed in one transaction.
const MAX_BATCH: usize = 512;
/// Inserts that may wait for the writer before callers queue on the channel.
const QUEUE: usize = 4096;

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<StorageResult<Arc<Event>>>,
}

/// Handle for appending events; cheap to clone. The writer thread ends once every handle is dropped
/// and the queue is drained.
#[derive(Clone)]
pub struct EventWriter {
    jobs: mpsc::Sender<Job>,
    /// Cancelled when the writer thread ends, however it ends.
    ended: CancellationToken,
    /// The keys of the events it committed lately.
    recent: Arc<RecentKeys>,
}

impl EventWriter {
    /// Starts the writer thread. `published` is called with each committed batch, in commit order.
    pub fn start(
        store: Arc<Store>,
        published: impl Fn(&[Arc<Event>]) + Send + 'static,
    ) -> (Self, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let ended = CancellationToken::new();
        let on_exit = ended.clone().drop_guard();
        let recent = Arc::new(RecentKeys::default());
        let remembered = recent.clone();
        let thread = std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || {
                // Dropped on return and on unwind alike.
                let _on_exit = on_exit;
                write_loop(&store, &remembered, queue, published);
            })
            .expect("spawning the event writer thread");
        (Self { jobs, ended, recent }, thread)
    }

    /// The keys of the events this writer committed within the idempotency window.
    pub fn recent_keys(&self) -> &RecentKeys {
        &self.recent
    }

    /// Completes once the writer thread has ended (while Broker serves, only if it died).
    pub async fn stopped(&self) {
        self.ended.cancelled().await;
    }

    /// Appends one event; returns it with its sequence number once it is committed.
    pub async fn append(&self, event: NewEvent) -> StorageResult<Arc<Event>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { event, reply })
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        answer.await.map_err(|_| StorageError::WriterStopped)?
    }
}

fn write_loop(
    store: &Store,
    recent: &RecentKeys,
    mut queue: mpsc::Receiver<Job>,
    published: impl Fn(&[Arc<Event>]),
) {
    let mut last_seqs = HashMap::new();
    // Inserts held for the next batch: a key repeated within one batch waits for the first's commit.
    let mut held = Vec::new();
    loop {
        let mut jobs = std::mem::take(&mut held);
        if jobs.is_empty() {
            match queue.blocking_recv() {
                Some(job) => jobs.push(job),
                None => break,
            }
        }
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let jobs = answer_repeats(store, recent, jobs, &mut held);
        if jobs.is_empty() {
            continue;
        }
        let (events, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.event, j.reply)).unzip();
        let started = std::time::Instant::now();
        let size = events.len();
        let appended = store.append_batch(events, &mut last_seqs);
        metrics().commit_seconds.observe(started.elapsed().as_secs_f64());
        metrics().commit_batch_size.observe(size as f64);
        match appended {
            Ok(outcomes) => {
                let answers: Vec<StorageResult<Arc<Event>>> = outcomes
                    .into_iter()
                    .map(|outcome| outcome.map(Arc::new))
                    .collect();
                let committed: Vec<Arc<Event>> = answers
                    .iter()
                    .filter_map(|answer| answer.as_ref().ok().cloned())
                    .collect();
                // Keys first: a client that retries the moment it is answered finds its key.
                recent.record(committed.iter().filter_map(|event| {
                    let key = event.idempotency_key.as_ref()?;
                    let at = Committed {
                        tenant: event.tenant_name.clone(),
                        seq: event.seq,
                    };
                    Some((key, at))
                }));
                for (answer, reply) in answers.into_iter().zip(replies) {
                    let _ = reply.send(answer);
                }
                published(&committed);
            }
            Err(error) => {
                tracing::error!(%error, inserts = replies.len(), "event commit failed");
                last_seqs.clear();
                for reply in replies {
                    let _ = reply.send(Err(match &error {
                        StorageError::Full => StorageError::Full,
                        _ => StorageError::CommitFailed,
                    }));
                }
            }
        }
    }
    tracing::info!("event writer drained and stopped");
}

/// Answers the inserts whose key was committed within the window with that event, and holds back
/// an insert whose key an earlier one of `jobs` carries; the rest are to be committed.
fn answer_repeats(store: &Store, recent: &RecentKeys, jobs: Vec<Job>, held: &mut Vec<Job>) -> Vec<Job> {
    let mut batch_keys: HashSet<IdempotencyKey> = HashSet::new();
    let mut fresh = Vec::with_capacity(jobs.len());
    for job in jobs {
        let Some(key) = job.event.idempotency_key.clone() else {
            fresh.push(job);
            continue;
        };
        if let Some(at) = recent.get(&key) {
            match store.event_at(&at.tenant, at.seq) {
                Ok(Some(event)) => {
                    let _ = job.reply.send(Ok(Arc::new(event)));
                    continue;
                }
                // Gone since (erased): the insert is new again.
                Ok(None) => {}
                Err(error) => {
                    let _ = job.reply.send(Err(error));
                    continue;
                }
            }
        }
        if batch_keys.insert(key) {
            fresh.push(job);
        } else {
            held.push(job);
        }
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_event() -> NewEvent {
        NewEvent {
            tenant_name: "t".into(),
            username: "u".into(),
            event: "e".into(),
            data: serde_json::json!(1),
            timestamp: 0,
            reads: Vec::new(),
            idempotency_key: None,
            tenant_max_bytes: 0,
        }
    }

    #[tokio::test]
    async fn an_event_commits_only_while_what_its_guest_read_still_holds() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Arc::new(Store::open(dir.path(), 16).unwrap());
        let (writer, _thread) = EventWriter::start(store.clone(), |_| {});
        let read = |seq| crate::model::LatestRead {
            name: "e".into(),
            seq,
        };
        let judged_on = |seq| NewEvent {
            reads: vec![read(seq)],
            ..new_event()
        };
        // Judged on "no e yet": the first commits, the second finds e at seq 1 and is left out.
        assert_eq!(writer.append(judged_on(0)).await.unwrap().seq, 1);
        assert!(matches!(
            writer.append(judged_on(0)).await,
            Err(StorageError::StaleRead)
        ));
        // Judged again on the new state, it commits; nothing was numbered for the refused one.
        assert_eq!(writer.append(judged_on(1)).await.unwrap().seq, 2);
        assert_eq!(store.latest_of("t", "e").unwrap().unwrap().seq, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inserts_with_one_key_store_one_event_even_in_one_batch() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Arc::new(Store::open(dir.path(), 16).unwrap());
        let (writer, _thread) = EventWriter::start(store.clone(), |_| {});
        let keyed = |data: u64| NewEvent {
            data: serde_json::json!(data),
            idempotency_key: Some(IdempotencyKey::new("t", "u", "k").unwrap()),
            ..new_event()
        };
        // Ten copies at once (most in one batch), then one more after their commit.
        let copies: Vec<_> = (0..10)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.append(keyed(i)).await.unwrap() })
            })
            .collect();
        let mut seqs = Vec::new();
        for copy in copies {
            seqs.push(copy.await.unwrap().seq);
        }
        seqs.push(writer.append(keyed(99)).await.unwrap().seq);
        assert!(seqs.iter().all(|&seq| seq == 1), "{seqs:?}");
        assert_eq!(store.events_after("t", 0, 100, 1 << 20).unwrap().events.len(), 1);
        // Without a key, a new event.
        assert_eq!(writer.append(new_event()).await.unwrap().seq, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_takes_at_most_512_of_the_inserts_waiting() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Arc::new(Store::open(dir.path(), 64).unwrap());
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        // The writer is held after its first commit while 1,500 inserts queue up behind it.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Mutex::new(Some(held));
        let seen = batches.clone();
        let (writer, _thread) = EventWriter::start(store, move |batch| {
            seen.lock().unwrap().push(batch.len());
            if let Some(held) = held.lock().unwrap().take() {
                held.recv().unwrap();
            }
        });
        writer.append(new_event()).await.unwrap();
        let waiting: Vec<_> = (0..1500)
            .map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.append(new_event()).await.unwrap().seq })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        release.send(()).unwrap();
        let mut seqs = Vec::new();
        for append in waiting {
            seqs.push(append.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (2..=1501).collect::<Vec<u64>>());
        let batches = batches.lock().unwrap().clone();
        // One alone, then the queue in commits of 512 (measured: [1, 512, 512, 476]).
        assert_eq!(batches.iter().sum::<usize>(), 1501, "{batches:?}");
        assert!(batches.iter().all(|&size| size <= 512), "{batches:?}");
        assert!(batches.contains(&512), "the bound was reached: {batches:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_4096_inserts_wait_in_the_queue_and_the_rest_wait_to_enter_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Arc::new(Store::open(dir.path(), 256).unwrap());
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Mutex::new(Some(held));
        let (writer, _thread) = EventWriter::start(store, move |_| {
            if let Some(held) = held.lock().unwrap().take() {
                held.recv().unwrap();
            }
        });
        writer.append(new_event()).await.unwrap();
        // The writer is held: 5,000 more inserts arrive.
        let waiting: Vec<_> = (0..5000)
            .map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.append(new_event()).await.unwrap().seq })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(writer.jobs.capacity(), 0, "the queue is full at {QUEUE}");
        assert_eq!(writer.jobs.max_capacity(), QUEUE);
        release.send(()).unwrap();
        let mut seqs = Vec::new();
        for append in waiting {
            seqs.push(append.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (2..=5001).collect::<Vec<u64>>(),
            "every waiting insert was committed once"
        );
    }

    #[tokio::test]
    async fn a_writer_that_dies_is_seen_finished_and_refuses_inserts() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Arc::new(Store::open(dir.path(), 16).unwrap());
        let (writer, thread) = EventWriter::start(store, |_| panic!("publishing failed"));
        // Answered after its commit, before the publish that kills the thread.
        assert_eq!(writer.append(new_event()).await.unwrap().seq, 1);
        // `run` watches for exactly this and stops the process.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !thread.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the dead writer thread is seen finished");
        assert!(
            matches!(writer.append(new_event()).await, Err(StorageError::WriterStopped)),
            "later inserts are refused, not left hanging"
        );
    }
}
