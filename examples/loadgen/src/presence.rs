//! `presence`: a crowd of C users (`--clients`, one stream each, one tenant) connects at once,
//! twice: first with plain `/sse` streams (the baseline), then, once those have closed, with
//! `/sse?presence=true`. For the presence crowd it reports how long each stream took until its view
//! held all C users (convergence: p50, p99, max), how many presence frames each received (the
//! coalescing: far fewer than C), and the server CPU of each crowd from the first connection until
//! every stream had converged (or opened, for the baseline) plus a settling second: their ratio is
//! what presence adds to a crowd connecting.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::api::{Auth, Target};
use crate::probe::{CpuMark, CpuUse};
use crate::stats::Latencies;
use crate::{Args, Progress, Server};

/// Streams being opened at once (keeps the server's accept backlog from overflowing).
const OPENING_AT_ONCE: usize = 100;
/// Left after a crowd is in, before its CPU is read: coalesced frames still in flight.
const SETTLE: Duration = Duration::from_secs(1);

/// One crowd's outcome.
struct Crowd {
    cpu: CpuUse,
    opened: usize,
    /// Per stream that converged: the time from the crowd's start.
    converged: Latencies,
    converged_count: usize,
    /// Presence frames per stream.
    frames: Vec<u64>,
}

pub async fn run(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<Value> {
    if target.server != Server::Broker {
        bail!("presence is Broker's only");
    }
    let setup = target.new_client()?;
    let users = target
        .users(&setup, "present", args.clients.max(1), false)
        .await?;
    // One connection per stream: over HTTPS, HTTP/2 would multiplex them onto one connection.
    let http = target.client().http1_only().pool_max_idle_per_host(0).build()?;
    let plain = crowd(target, &http, &users, false, args, progress).await;
    // The plain crowd's users leave (published within 250 ms) before the next crowd comes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut present = crowd(target, &http, &users, true, args, progress).await;

    let frames = &present.frames;
    let mean_frames = frames.iter().sum::<u64>() as f64 / frames.len().max(1) as f64;
    let ratio = match (present.cpu.server_seconds, plain.cpu.server_seconds) {
        (Some(with), Some(without)) if without > 0.0 => Some(with / without),
        _ => None,
    };
    Ok(json!({
        "scenario": "presence",
        "users": users.len(),
        "opened": present.opened,
        "plain_opened": plain.opened,
        "converged": present.converged_count,
        "all_converged": present.converged_count == users.len(),
        "convergence": present.converged.summary(),
        "latency": present.converged.summary(),
        "frames_per_stream": {"mean": mean_frames, "max": frames.iter().max().copied().unwrap_or(0)},
        "server_cpu_seconds": {"plain": plain.cpu.server_seconds, "presence": present.cpu.server_seconds},
        "wall_seconds": {"plain": plain.cpu.wall_seconds, "presence": present.cpu.wall_seconds},
        "presence_cpu_ratio": ratio,
        "server_cores": present.cpu.server_cores(),
        "client_cores": present.cpu.client_cores(),
        "errors": users.len() - present.opened,
    }))
}

/// Every user opens one stream at once; each stream reads until its view holds every user (a
/// plain stream: until it is open); all stay open until every stream got there or time ran out.
async fn crowd(
    target: &Target,
    http: &reqwest::Client,
    users: &[Auth],
    presence: bool,
    args: &Args,
    progress: &Progress,
) -> Crowd {
    let count = users.len();
    let deadline = tokio::time::Instant::now() + args.duration();
    let started = tokio::time::Instant::now();
    let mark = CpuMark::now(args.pid);
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let done = Arc::new(AtomicUsize::new(0));
    let (release, released) = watch::channel(false);
    let path = if presence { "/sse?presence=true" } else { "/sse" };
    let streams: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, auth)| {
            let (target, http, auth) = (target.for_client(i), http.clone(), auth.clone());
            let (opening, done, progress, mut released) =
                (opening.clone(), done.clone(), progress.clone(), released.clone());
            tokio::spawn(async move {
                let permit = opening.acquire_owned().await.ok()?;
                let Ok(mut frames) = target.subscribe(&http, &auth, path).await else {
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                drop(permit);
                let mut present: HashSet<String> = HashSet::new();
                let mut received = 0u64;
                let mut converged = (!presence).then(|| started.elapsed());
                if converged.is_some() {
                    done.fetch_add(1, Ordering::Relaxed);
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
                loop {
                    tokio::select! {
                        // Converged streams stay open (and keep counting frames) until released.
                        frame = frames.next_named() => {
                            let (name, data) = frame?;
                            if !name.starts_with("broker.presence") {
                                continue;
                            }
                            received += 1;
                            apply(&mut present, &name, &data);
                            if converged.is_none() && present.len() >= count {
                                converged = Some(started.elapsed());
                                done.fetch_add(1, Ordering::Relaxed);
                                progress.done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ = released.wait_for(|released| *released) => return Some((converged, received)),
                    }
                }
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < count && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let cpu = mark.until_now();
    let _ = release.send(true);
    let mut outcome = Crowd {
        cpu,
        opened: 0,
        converged: Latencies::default(),
        converged_count: 0,
        frames: Vec::new(),
    };
    for stream in streams {
        let Ok(Some((converged, received))) = stream.await else {
            continue;
        };
        outcome.opened += 1;
        outcome.frames.push(received);
        if let Some(converged) = converged {
            outcome.converged_count += 1;
            outcome.converged.record(converged);
        }
    }
    outcome
}

/// Applies one presence frame (`{"users": [...]}`) to a stream's view.
fn apply(present: &mut HashSet<String>, name: &str, data: &[u8]) {
    let users: Vec<String> = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|data| serde_json::from_value(data["users"].clone()).ok())
        .unwrap_or_default();
    match name {
        "broker.presence" => *present = users.into_iter().collect(),
        "broker.presence.join" => present.extend(users),
        "broker.presence.leave" => {
            for user in users {
                present.remove(&user);
            }
        }
        _ => {}
    }
}
