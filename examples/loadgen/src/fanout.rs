//! `fanout`: S subscribers on one tenant's `/sse` while P publishers insert. Every event carries its
//! publisher, that publisher's sequence number and the send time, so loss, duplication and order
//! are judged from the data itself (the original broker's SSE ids are not sequence numbers).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::api::{SseFrames, Target, unix_micros};
use crate::stats::Latencies;
use crate::{Args, Progress};

/// How long subscribers wait for stragglers after the last insert was acknowledged.
const DRAIN: Duration = Duration::from_secs(10);
const EVENT: &str = "fanout";

#[derive(Default)]
struct Delivery {
    unique: u64,
    duplicated: u64,
    out_of_order: u64,
    latencies: Latencies,
    last_arrival: Option<Instant>,
}

/// Reads one subscriber's stream until it has `expected` distinct events (once that is known) or
/// the drain time after publishing runs out.
async fn subscriber(
    mut frames: SseFrames,
    mut expected: watch::Receiver<Option<u64>>,
    progress: Progress,
) -> Delivery {
    let mut delivery = Delivery::default();
    let mut seen = HashSet::new();
    let mut last_per_publisher: HashMap<u64, u64> = HashMap::new();
    let mut give_up: Option<tokio::time::Instant> = None;
    loop {
        if let Some(total) = *expected.borrow() {
            if delivery.unique >= total {
                break;
            }
            give_up.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN);
        }
        let until = give_up.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let data = tokio::select! {
            data = frames.next() => match data { Some(data) => data, None => break },
            _ = expected.changed() => continue,
            () = tokio::time::sleep_until(until) => break,
        };
        let (Some(publisher), Some(n), Some(sent)) =
            (data["p"].as_u64(), data["n"].as_u64(), data["sent_us"].as_u64())
        else {
            continue;
        };
        if !seen.insert((publisher, n)) {
            delivery.duplicated += 1;
            continue;
        }
        let last = last_per_publisher.entry(publisher).or_insert(0);
        if n < *last {
            delivery.out_of_order += 1;
        }
        *last = (*last).max(n);
        delivery.unique += 1;
        delivery
            .latencies
            .record_micros(unix_micros().saturating_sub(sent));
        delivery.last_arrival = Some(Instant::now());
        progress.done.fetch_add(1, Ordering::Relaxed);
    }
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
        // Each subscriber on its own connection, connected before anything is published.
        let frames = target.subscribe(&target.new_client()?, &reader).await?;
        subscribers.push(tokio::spawn(subscriber(
            frames,
            expected.clone(),
            progress.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.duration();
    let interval = args.client_interval();
    let publishing: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, auth)| {
            let (target, progress) = (target.clone(), progress.clone());
            let http = target.new_client()?;
            Ok(tokio::spawn(async move {
                let (mut acknowledged, mut errors, mut n) = (0u64, 0u64, 0u64);
                let mut next = tokio::time::Instant::now();
                while tokio::time::Instant::now() < deadline {
                    if let Some(interval) = interval {
                        tokio::time::sleep_until(next).await;
                        next += interval;
                    }
                    n += 1;
                    let data = json!({"p": p, "n": n, "sent_us": unix_micros()});
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
    let mut last_arrival = started;
    for task in subscribers {
        let delivery = task.await?;
        unique += delivery.unique;
        duplicated += delivery.duplicated;
        out_of_order += delivery.out_of_order;
        latencies.merge(delivery.latencies);
        last_arrival = last_arrival.max(delivery.last_arrival.unwrap_or(started));
    }
    let expected_total = inserts * args.subscribers as u64;
    let elapsed = (last_arrival - started).as_secs_f64().max(1e-3);
    Ok(json!({
        "scenario": "fanout", "publishers": args.clients, "subscribers": args.subscribers,
        "seconds": elapsed, "rate": args.rate,
        "inserts": inserts, "errors": insert_errors,
        "deliveries": unique, "per_second": unique as f64 / elapsed,
        "lost": expected_total.saturating_sub(unique), "duplicated": duplicated, "out_of_order": out_of_order,
        "latency": latencies.summary(),
    }))
}
