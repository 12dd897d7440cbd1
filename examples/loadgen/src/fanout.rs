//! `fanout`: S subscribers on one tenant's `/sse` while P publishers insert. Every event carries its
//! publisher, that publisher's sequence number and the send time, so loss, duplication and order
//! are judged from the data itself (the original broker's SSE ids are not sequence numbers).
//!
//! `rooms`: the same, with the subscribers spread over R rooms (subscriber i filters
//! `room.<i mod R>.*`) and each insert going to a random room: loss, duplication and order are
//! judged per stream, against what was acknowledged in its room, and an event from another room
//! counts as misrouted. With `--unmatched` the streams filter rooms nobody publishes to, to
//! measure what open streams that match nothing cost an insert.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::api::{SseFrames, Target, unix_micros};
use crate::probe::{CpuUse, Probe};
use crate::sequence::{Arrival, Seen};
use crate::stamp::Stamp;
use crate::stats::Latencies;
use crate::{Args, Progress, Scenario};

/// How long subscribers wait for stragglers after the last insert was acknowledged.
const DRAIN: Duration = Duration::from_secs(10);
const EVENT: &str = "fanout";
/// Deliveries a subscriber counts locally before adding them to the shared progress counter: one
/// contended atomic per event would cost the subscriber side more than the rest of its work.
const PROGRESS_BATCH: u64 = 32;

/// Acknowledged inserts per room, once publishing is over (one room in `fanout`).
type RoomCounts = Option<Arc<Vec<u64>>>;

/// Where a subscriber listens: its room's index, and whether events carry a room to check.
#[derive(Clone, Copy)]
struct Place {
    room: usize,
    rooms: bool,
    /// Filtering a room nobody publishes to: expects nothing.
    unmatched: bool,
}

#[derive(Default)]
struct Delivery {
    unique: u64,
    /// Events this stream should have received.
    expected: u64,
    duplicated: u64,
    out_of_order: u64,
    /// Events of another room.
    misrouted: u64,
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
    place: Place,
    mut expected: watch::Receiver<RoomCounts>,
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
                total = expected.borrow_and_update().as_ref().map(|counts| {
                    if place.unmatched { 0 } else { counts[place.room] }
                });
                if total.is_some() {
                    give_up.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                }
                continue;
            }
            () = &mut give_up => break,
        };
        let Some(stamp) = stamp else { continue };
        if place.rooms && stamp.room != Some(place.room as u64) {
            delivery.misrouted += 1;
            continue;
        }
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
    delivery.expected = total.unwrap_or(0);
    delivery
}

/// A publisher's room picker: xorshift, seeded per publisher (no need for a random crate).
struct RoomPicker(u64);

impl RoomPicker {
    fn next(&mut self, rooms: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % rooms as u64) as usize
    }
}

pub async fn run(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<Value> {
    let setup = target.new_client()?;
    let publishers = target
        .users(&setup, "publisher", args.clients.max(1), false)
        .await?;
    let reader = target.users(&setup, "reader", 1, false).await?.remove(0);

    let in_rooms = matches!(args.scenario, Scenario::Rooms);
    let rooms = if in_rooms { args.rooms.max(1) } else { 1 };
    let (set_expected, expected) = watch::channel(None);
    let mut subscribers = Vec::new();
    for i in 0..args.subscribers {
        let place = Place {
            room: i % rooms,
            rooms: in_rooms,
            unmatched: in_rooms && args.unmatched,
        };
        let path = match (in_rooms, args.unmatched) {
            (false, _) => "/sse".to_owned(),
            (true, false) => format!("/sse?events=room.{}.*", place.room),
            (true, true) => format!("/sse?events=idle.{}.*", place.room),
        };
        // Each subscriber on its own connection, connected before anything is published: over
        // https through a client of its own (one client would multiplex them all over HTTP/2);
        // over http the stream is read off its own socket and no client is used.
        let http = match target.url.starts_with("https://") {
            true => target.new_client()?,
            false => setup.clone(),
        };
        let frames = target.for_client(i).subscribe(&http, &reader, &path).await?;
        subscribers.push(tokio::spawn(subscriber(
            frames,
            place,
            expected.clone(),
            progress.clone(),
        )));
    }
    // Let the server finish setting up the streams (their replays, its first writes to each) before
    // the clock starts: 200 ms, and 0.1 ms more per stream (1.2 s for 10,000).
    tokio::time::sleep(Duration::from_millis(200) + Duration::from_micros(100) * args.subscribers as u32)
        .await;

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
            let (target, progress) = (target.for_client(p), progress.clone());
            let http = target.new_client()?;
            Ok(tokio::spawn(async move {
                let (mut acknowledged, mut errors, mut n) = (vec![0u64; rooms], 0u64, 0u64);
                let mut insert_latencies = Latencies::default();
                let mut picker = RoomPicker(0x9E37_79B9_7F4A_7C15 ^ (p as u64 + 1));
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
                    let room = if in_rooms { picker.next(rooms) } else { 0 };
                    let stamp = Stamp {
                        publisher: p as u64,
                        n,
                        sent_us: unix_micros(),
                        room: in_rooms.then_some(room as u64),
                    };
                    let data = stamp.to_json();
                    let event = if in_rooms {
                        format!("room.{room}.msg")
                    } else {
                        EVENT.to_owned()
                    };
                    let sent = std::time::Instant::now();
                    if target.insert(&http, &auth, &event, &data).await.unwrap_or(false) {
                        insert_latencies.record(sent.elapsed());
                        acknowledged[room] += 1;
                    } else {
                        errors += 1;
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (acknowledged, errors, insert_latencies)
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let (mut per_room, mut insert_errors) = (vec![0u64; rooms], 0);
    let mut insert_latencies = Latencies::default();
    for task in publishing {
        let (acknowledged, errors, latencies) = task.await?;
        insert_latencies.merge(latencies);
        for (total, room) in per_room.iter_mut().zip(acknowledged) {
            *total += room;
        }
        insert_errors += errors;
    }
    let inserts: u64 = per_room.iter().sum();
    let _ = set_expected.send(Some(Arc::new(per_room)));

    let (mut unique, mut duplicated, mut out_of_order, mut latencies) = (0, 0, 0, Latencies::default());
    let (mut expected_total, mut lost, mut misrouted) = (0, 0, 0);
    let mut last_arrival_us = started_us;
    for task in subscribers {
        let delivery = task.await?;
        unique += delivery.unique;
        expected_total += delivery.expected;
        lost += delivery.expected.saturating_sub(delivery.unique);
        misrouted += delivery.misrouted;
        duplicated += delivery.duplicated;
        out_of_order += delivery.out_of_order;
        latencies.merge(delivery.latencies);
        last_arrival_us = last_arrival_us.max(delivery.last_arrival_us);
    }
    // The CPU window spans publishing and delivering, up to the last subscriber's last event.
    let cpu = probe.end_phase();
    let samples = probe.finish().await;
    let elapsed = ((last_arrival_us - started_us) as f64 / 1e6).max(1e-3);
    let mut result = json!({
        "scenario": if in_rooms { "rooms" } else { "fanout" },
        "publishers": args.clients, "subscribers": args.subscribers,
        "seconds": elapsed, "rate": args.rate,
        "inserts": inserts, "errors": insert_errors,
        "deliveries": unique, "expected_deliveries": expected_total, "per_second": unique as f64 / elapsed,
        "lost": lost, "duplicated": duplicated, "out_of_order": out_of_order,
        "latency": latencies.summary(),
        "insert_latency": insert_latencies.summary(),
        "server_cpu_us_per_delivery": CpuUse::micros_per(cpu.server_seconds, unique),
        "client_cpu_us_per_delivery": CpuUse::micros_per(cpu.client_seconds, unique),
        "server_cpu_us_per_insert": CpuUse::micros_per(cpu.server_seconds, inserts),
    });
    if in_rooms {
        result["rooms"] = rooms.into();
        result["unmatched"] = args.unmatched.into();
        result["misrouted"] = misrouted.into();
    }
    samples.add_to(&mut result);
    Ok(result)
}
