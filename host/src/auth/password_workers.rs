//! A fixed set of threads that run every argon2 hash and verification, behind a bounded queue.
//!
//! Why not `spawn_blocking`: each argon2 call needs ~19 MiB, the blocking pool grows to 512
//! threads, and glibc keeps each thread's arena at its high-water mark. Anonymous requests (Basic
//! auth with unknown names costs a hash too) could then pin gigabytes. Here each worker owns one
//! `Hasher` whose block buffer is allocated once, so passwords hold `workers` × 19 MiB, and a
//! caller that finds the queue full is refused at once (503 with `Retry-After`) instead of waiting
//! without end.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::password::Hasher;
use crate::metrics::metrics;

/// Why a password job did not run.
#[derive(Debug, thiserror::Error)]
pub enum PasswordJobError {
    /// Every worker is busy and the queue is full: the caller should retry shortly.
    #[error("too many password checks in progress; retry shortly")]
    Busy,
    #[error("password workers have stopped")]
    Stopped,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

enum Work {
    Hash(String),
    /// Verifies against `phc`, or burns the time of a verification when there is no user.
    Verify {
        password: String,
        phc: Option<String>,
    },
}

enum Done {
    Hashed(String),
    Verified(bool),
}

struct Job {
    work: Work,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Done, String>>,
}

/// Handle on the worker threads; cheap to share. The threads end when it is dropped.
pub struct PasswordWorkers {
    jobs: SyncSender<Job>,
}

impl PasswordWorkers {
    /// Starts `workers` threads (at least one) behind a queue of `queue` waiting jobs.
    pub fn start(workers: usize, queue: usize) -> Self {
        let (jobs, receiver) = mpsc::sync_channel(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..workers.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work_loop(&receiver))
                .expect("spawning a password worker thread");
        }
        Self { jobs }
    }

    /// A new argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String, PasswordJobError> {
        match self.run(Work::Hash(password)).await? {
            Done::Hashed(phc) => Ok(phc),
            Done::Verified(_) => unreachable!("a hash job answers with a hash"),
        }
    }

    /// Whether `password` matches `phc`; with no `phc` (unknown user) it spends the same time and
    /// answers false, so that timing does not reveal which usernames exist.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, PasswordJobError> {
        match self.run(Work::Verify { password, phc }).await? {
            Done::Verified(matches) => Ok(matches),
            Done::Hashed(_) => unreachable!("a verify job answers with a verdict"),
        }
    }

    async fn run(&self, work: Work) -> Result<Done, PasswordJobError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            work,
            reply,
            queued_at: Instant::now(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PasswordJobError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(PasswordJobError::Stopped),
        }
        answer
            .await
            .map_err(|_| PasswordJobError::Stopped)?
            .map_err(PasswordJobError::Failed)
    }
}

fn work_loop(jobs: &Mutex<Receiver<Job>>) {
    let mut hasher = Hasher::default();
    loop {
        // One idle worker waits on the queue at a time; the others wait for the lock.
        let next = jobs.lock().map(|receiver| receiver.recv());
        let Ok(Ok(job)) = next else { return };
        metrics()
            .password_queue_wait_seconds
            .observe(job.queued_at.elapsed().as_secs_f64());
        if job.reply.is_closed() {
            continue; // the client went away while queued: skip the work
        }
        let done = match job.work {
            Work::Hash(password) => hasher.hash(&password).map(Done::Hashed),
            Work::Verify {
                password,
                phc: Some(phc),
            } => hasher.verify(&password, &phc).map(Done::Verified),
            Work::Verify { password, phc: None } => {
                hasher.burn_time(&password);
                Ok(Done::Verified(false))
            }
        };
        let _ = job.reply.send(done);
    }
}
