//! `fanout`: S subscribers on one tenant's `/sse` while P publishers insert. Every event carries its
//! publisher, that publisher's sequence number and the send time, so loss, duplication and order
//! are judged from the data itself (the original broker's SSE ids are not sequence numbers).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::api::{SseFrames, Target, unix_micros};
use crate::probe::{CpuUse, Probe};
use crate::sequence::{Arrival, Seen};
use crate::stamp::Stamp;
use crate::stats::Latencies;
use crate::{Args, Progress};

/// How long subscribers wait for stragglers after the last insert was acknowledged.
const DRAIN: Duration = Duration::from_secs(10);
const EVENT: &str = "fanout";
/// Deliveries a subscriber counts locally before adding them to the shared progress counter: one
/// contended atomic per event would cost the subscriber side more than the rest of its work.
const PROGRESS_BATCH: u64 = 32;

#[derive(Default)]
struct Delivery {
    unique: u64,
    duplicated: u64,
    out_of_order: u64,
    latencies: Latencies,
    /// Unix microseconds of the last new event (0: none).
    last_arrival_us: u64,
}

/// How long a subscriber keeps reading after its last expected event, to count trailing repeats.
const TAIL: Duration = Duration::from_millis(300);

/// Reads one subscriber's stream until it has `expected` distinct events (once that is known) and
/// then for `TAIL` more, or until the drain time after publishing runs out.
async fn subscriber(
    mut frames: SseFrames,
    mut expected: watch::Receiver<Option<u64>>,
    progress: Progress,
) -> Delivery {
    let mut delivery = Delivery::default();
    let mut seen = Seen::default();
    let mut total: Option<u64> = None;
    // One timer for the whole stream, re-armed once when publishing ends, not one per frame.
    let give_up = tokio::time::sleep(Duration::from_secs(24 * 3600));
    tokio::pin!(give_up);
    let mut unreported = 0;
    let mut tailing = false;
    loop {
        if !tailing && total.is_some_and(|total| delivery.unique >= total) {
            // Every event arrived: read on briefly, since a repeat after the last new event is
            // still a duplicate, and stopping here would never count it.
            tailing = true;
            give_up.as_mut().reset(tokio::time::Instant::now() + TAIL);
        }
        let stamp = tokio::select! {
            biased;
            data = frames.next_data() => match data { Some(data) => Stamp::parse(data), None => break },
            changed = expected.changed(), if total.is_none() => {
                if changed.is_err() {
                    break;
                }
                total = *expected.borrow_and_update();
                if total.is_some() {
                    give_up.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                }
                continue;
            }
            () = &mut give_up => break,
        };
        let Some(stamp) = stamp else { continue };
        match seen.record(stamp.publisher, stamp.n) {
            None => continue,
            Some(Arrival::Duplicate) => delivery.duplicated += 1,
            Some(Arrival::New { in_order }) => {
                delivery.out_of_order += u64::from(!in_order);
                delivery.unique += 1;
                let now = unix_micros();
                delivery
                    .latencies
                    .record_micros(now.saturating_sub(stamp.sent_us));
                delivery.last_arrival_us = now;
                unreported += 1;
                if unreported == PROGRESS_BATCH {
                    progress.done.fetch_add(unreported, Ordering::Relaxed);
                    unreported = 0;
                }
            }
        }
    }
    progress.done.fetch_add(unreported, Ordering::Relaxed);
    delivery
}

pub async fn run(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<Value> {
    let setup = target.new_client()?;
    let publishers = target
        .users(&setup, "publisher", args.clients.max(1), false)
        .await?;
    let reader = target.users(&setup, "reader", 1, false).await?.remove(0);

    let (set_expected, expected) = watch::channel(None);
    let mut subscribers = Vec::new();
    for _ in 0..args.subscribers {
        // Each subscriber on its own connection, connected before anything is published: over
        // https through a client of its own (one client would multiplex them all over HTTP/2);
        // over http the stream is read off its own socket and no client is used.
        let http = match target.url.starts_with("https://") {
            true => target.new_client()?,
            false => setup.clone(),
        };
        let frames = target.subscribe(&http, &reader).await?;
        subscribers.push(tokio::spawn(subscriber(
            frames,
            expected.clone(),
            progress.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started_us = unix_micros();
    let mut probe = Probe::start(args.pid);
    let deadline = tokio::time::Instant::now() + args.duration();
    probe.sample_during_at(deadline - args.duration() / 2);
    let interval = args.client_interval();
    let clients = args.clients.max(1) as u32;
    let publishing: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, auth)| {
            let (target, progress) = (target.clone(), progress.clone());
            let http = target.new_client()?;
            Ok(tokio::spawn(async move {
                let (mut acknowledged, mut errors, mut n) = (0u64, 0u64, 0u64);
                // Publishers are spread evenly over one interval: started in step, they would
                // insert in bursts of `clients` events, and a burst's last delivery waits for the
                // whole burst's fan-out, which measures the burst rather than the rate.
                let mut next = tokio::time::Instant::now()
                    + interval.map_or(Duration::ZERO, |interval| interval * p as u32 / clients);
                while tokio::time::Instant::now() < deadline {
                    if let Some(interval) = interval {
                        tokio::time::sleep_until(next).await;
                        next += interval;
                    }
                    n += 1;
                    let stamp = Stamp {
                        publisher: p as u64,
                        n,
                        sent_us: unix_micros(),
                    };
                    let data = stamp.to_json();
                    if target.insert(&http, &auth, EVENT, &data).await.unwrap_or(false) {
                        acknowledged += 1;
                    } else {
                        errors += 1;
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (acknowledged, errors)
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let (mut inserts, mut insert_errors) = (0, 0);
    for task in publishing {
        let (acknowledged, errors) = task.await?;
        inserts += acknowledged;
        insert_errors += errors;
    }
    let _ = set_expected.send(Some(inserts));

    let (mut unique, mut duplicated, mut out_of_order, mut latencies) = (0, 0, 0, Latencies::default());
    let mut last_arrival_us = started_us;
    for task in subscribers {
        let delivery = task.await?;
        unique += delivery.unique;
        duplicated += delivery.duplicated;
        out_of_order += delivery.out_of_order;
        latencies.merge(delivery.latencies);
        last_arrival_us = last_arrival_us.max(delivery.last_arrival_us);
    }
    // The CPU window spans publishing and delivering, up to the last subscriber's last event.
    let cpu = probe.end_phase();
    let samples = probe.finish().await;
    let expected_total = inserts * args.subscribers as u64;
    let elapsed = ((last_arrival_us - started_us) as f64 / 1e6).max(1e-3);
    let mut result = json!({
        "scenario": "fanout", "publishers": args.clients, "subscribers": args.subscribers,
        "seconds": elapsed, "rate": args.rate,
        "inserts": inserts, "errors": insert_errors,
        "deliveries": unique, "per_second": unique as f64 / elapsed,
        "lost": expected_total.saturating_sub(unique), "duplicated": duplicated, "out_of_order": out_of_order,
        "latency": latencies.summary(),
        "server_cpu_us_per_delivery": CpuUse::micros_per(cpu.server_seconds, unique),
        "client_cpu_us_per_delivery": CpuUse::micros_per(cpu.client_seconds, unique),
    });
    samples.add_to(&mut result);
    Ok(result)
}
