//! `connections`: open C idle SSE connections, hold them for the run, and report the server's
//! resident memory per connection (from /proc/<pid>/status when the pid is given), its CPU while
//! they sit idle, and whether every connection stayed open.
//!
//! The connections open in two steps, a third and then the rest, with memory read after each: the
//! slope between the two is the cost of one more connection. A single delta from before the first
//! also counts a runtime's first-use costs, and memory the server kept from earlier work and reuses
//! for the connections (which hides their cost): measured once after other load, PocketBase showed
//! 4.3 KiB and Broker 8.7 KiB per connection, the reverse of the slope.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::api::Target;
use crate::probe::{CpuMark, Probe};
use crate::procfs::{self, Memory};
use crate::{Args, Progress};

/// How long memory is left to settle after a step of connections opened.
const SETTLE: Duration = Duration::from_secs(1);

/// Connections being opened at once (keeps the server's accept backlog from overflowing).
const OPENING_AT_ONCE: usize = 100;

/// KiB of growth from `before` to `during` per connection; signed, since memory can also shrink.
fn kib_per_connection(
    before: Option<Memory>,
    during: Option<Memory>,
    opened: u64,
    kib: fn(&Memory) -> u64,
) -> Option<f64> {
    let (before, during) = (before?, during?);
    (opened > 0).then(|| (kib(&during) as f64 - kib(&before) as f64) / opened as f64)
}

pub async fn run(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<Value> {
    let setup = target.new_client()?;
    let reader = target.users(&setup, "idle", 1, false).await?.remove(0);
    let started = Instant::now();
    let mut probe = Probe::start(args.pid);
    let deadline = tokio::time::Instant::now() + args.duration();
    let ended_early = Arc::new(AtomicU64::new(0));
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    // Holders close their connections only when told, after the idle CPU has been measured.
    let (release, released) = watch::channel(false);
    // One connection per stream: over HTTPS, HTTP/2 would multiplex them all onto one connection.
    let http = target.client().http1_only().pool_max_idle_per_host(0).build()?;
    let first_step = (args.clients / 3).max(1).min(args.clients);
    let spawn_holder = |_| {
        let (target, reader, http, progress) =
            (target.clone(), reader.clone(), http.clone(), progress.clone());
        let (ended_early, opening, mut released) = (ended_early.clone(), opening.clone(), released.clone());
        tokio::spawn(async move {
            let permit = opening.acquire_owned().await.expect("semaphore");
            let Ok(mut frames) = target.subscribe(&http, &reader, "/sse").await else {
                progress.errors.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            drop(permit);
            progress.done.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    frame = frames.next_data() => if frame.is_none() {
                        ended_early.fetch_add(1, Ordering::Relaxed);
                        return true;
                    },
                    _ = released.wait_for(|released| *released) => return true,
                }
            }
        })
    };
    let all_opened = |count: usize| {
        let progress = progress.clone();
        async move {
            while progress.done.load(Ordering::Relaxed) + progress.errors.load(Ordering::Relaxed)
                < count as u64
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut holders: Vec<_> = (0..first_step).map(spawn_holder).collect();
    all_opened(first_step).await;
    tokio::time::sleep(SETTLE).await;
    let at_first_step = (
        args.pid.and_then(procfs::memory),
        progress.done.load(Ordering::Relaxed),
    );
    holders.extend((first_step..args.clients).map(spawn_holder));
    all_opened(args.clients).await;
    let open_after = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let at_last_step = (
        args.pid.and_then(procfs::memory),
        progress.done.load(Ordering::Relaxed),
    );
    // Once everything is open and settled, half-way through the hold: memory, then the idle CPU
    // over the second half.
    tokio::time::sleep_until(deadline - (deadline - tokio::time::Instant::now()) / 2).await;
    probe.sample_during_at(tokio::time::Instant::now());
    let idle = CpuMark::now(args.pid);
    tokio::time::sleep_until(deadline).await;
    let idle = idle.until_now();
    probe.end_phase();
    let _ = release.send(true);
    let mut opened = 0;
    for holder in holders {
        opened += u64::from(holder.await?);
    }
    let samples = probe.finish().await;
    let ended = ended_early.load(Ordering::Relaxed);
    let (before, during) = (samples.before, samples.during);
    let mut result = json!({
        "scenario": "connections", "connections": args.clients, "opened": opened,
        "errors": args.clients as u64 - opened, "closed_early": ended, "all_stayed_open": opened == args.clients as u64 && ended == 0,
        "seconds_to_open": open_after, "per_second": opened as f64 / open_after.max(1e-3),
        "server_rss_kib_before": before.map(|m| m.rss_kib), "server_rss_kib_during": during.map(|m| m.rss_kib),
        "rss_kib_per_connection": kib_per_connection(before, during, opened, |m| m.rss_kib),
        "rss_anon_kib_per_connection": kib_per_connection(before, during, opened, |m| m.anon_kib),
        "slope_from": at_first_step.1, "slope_to": at_last_step.1,
        "rss_anon_kib_per_connection_slope":
            kib_per_connection(at_first_step.0, at_last_step.0, at_last_step.1.saturating_sub(at_first_step.1), |m| m.anon_kib),
        "rss_file_kib_per_connection_slope":
            kib_per_connection(at_first_step.0, at_last_step.0, at_last_step.1.saturating_sub(at_first_step.1), |m| m.file_kib),
        "server_cores_idle": idle.server_cores(),
        "idle_seconds": idle.wall_seconds,
    });
    samples.add_to(&mut result);
    Ok(result)
}
