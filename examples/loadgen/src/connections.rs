//! `connections`: open C idle SSE connections, hold them for the run, and report the server's
//! resident memory per connection (from /proc/<pid>/status when the pid is given) and whether every
//! connection stayed open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::api::Target;
use crate::{Args, Progress};

/// Connections being opened at once (keeps the server's accept backlog from overflowing).
const OPENING_AT_ONCE: usize = 100;

fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub async fn run(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<Value> {
    let setup = target.new_client()?;
    let reader = target.users(&setup, "idle", 1, false).await?.remove(0);
    let before = args.pid.and_then(resident_kib);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.duration();
    let ended_early = Arc::new(AtomicU64::new(0));
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    // One connection per stream: over HTTPS, HTTP/2 would multiplex them all onto one connection.
    let http = target.client().http1_only().pool_max_idle_per_host(0).build()?;
    let holders: Vec<_> = (0..args.clients)
        .map(|_| {
            let (target, reader, http, progress) =
                (target.clone(), reader.clone(), http.clone(), progress.clone());
            let (ended_early, opening) = (ended_early.clone(), opening.clone());
            tokio::spawn(async move {
                let permit = opening.acquire_owned().await.expect("semaphore");
                let Ok(mut frames) = target.subscribe(&http, &reader).await else {
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                    return false;
                };
                drop(permit);
                progress.done.fetch_add(1, Ordering::Relaxed);
                loop {
                    tokio::select! {
                        frame = frames.next() => if frame.is_none() {
                            ended_early.fetch_add(1, Ordering::Relaxed);
                            return true;
                        },
                        () = tokio::time::sleep_until(deadline) => return true,
                    }
                }
            })
        })
        .collect();
    // Measure memory once everything is open and settled, half-way through the hold.
    while progress.done.load(Ordering::Relaxed) + progress.errors.load(Ordering::Relaxed)
        < args.clients as u64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let open_after = started.elapsed().as_secs_f64();
    tokio::time::sleep_until(deadline - (deadline - tokio::time::Instant::now()) / 2).await;
    let during = args.pid.and_then(resident_kib);
    let mut opened = 0;
    for holder in holders {
        opened += u64::from(holder.await?);
    }
    let ended = ended_early.load(Ordering::Relaxed);
    let per_connection = match (before, during) {
        (Some(before), Some(during)) if opened > 0 => {
            json!((during.saturating_sub(before)) as f64 / opened as f64)
        }
        _ => Value::Null,
    };
    Ok(json!({
        "scenario": "connections", "connections": args.clients, "opened": opened,
        "errors": args.clients as u64 - opened, "closed_early": ended, "all_stayed_open": opened == args.clients as u64 && ended == 0,
        "seconds_to_open": open_after, "per_second": opened as f64 / open_after.max(1e-3),
        "server_rss_kib_before": before, "server_rss_kib_during": during, "rss_kib_per_connection": per_connection,
    }))
}
