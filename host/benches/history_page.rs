//! What a page of history costs as a tenant grows. Run with `cargo bench --bench history_page`, or
//! on a JetStream cluster with `cargo bench --bench history_page -- --nats <urls>` (its event
//! stream must be new: the tenants are filled from empty). `--pages N` times N pages of each
//! filter in each tenant (2,000).
//!
//! One event log holds two tenants: `small` with 1,000 events over 5 names and `large` with
//! 1,000,000 over 1,000 names. A page of 100 events of one name
//! (newest first, below a random cursor) is timed in each, interleaved, and the ratio of the
//! medians printed: the name index (LMDB) or the subject index (JetStream) makes a page cost the
//! page, not the tenant. The same for prefix filters and for no filter. The last line is one JSON
//! object with every figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::cluster::Cluster;
use broker::cluster::events::JetStreamLog;
use broker::config::Config;
use broker::event_log::{EventLog, PageStart};
use broker::fanout::Fanout;
use broker::filter::EventFilter;
use broker::model::NewEvent;
use broker::store::writer::EventWriter;
use broker::store::{LmdbEventLog, Store};
use clap::Parser;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SMALL: u64 = 1_000;
const LARGE: u64 = 1_000_000;
/// Appends in flight while filling (the writer commits up to 512 per transaction).
const IN_FLIGHT: usize = 4_096;
/// Pages timed per tenant and filter (`--pages`).
const PAGES: usize = 2_000;

/// Event `n` of a tenant with `names` names.
fn new_event(tenant: &str, n: u64, names: u64) -> NewEvent {
    NewEvent {
        tenant_name: tenant.into(),
        username: "bench".into(),
        event: format!("room.{}.msg", n % names),
        data: json!({"n": n, "text": "a message of a usual size for a chat"}),
        timestamp: 1_700_000_000_000,
        reads: Vec::new(),
        idempotency_key: None,
        tenant_max_bytes: 0,
    }
}

/// Fills `tenant` with `count` events over `names` names; answers its first and last ids.
async fn fill(log: &Arc<dyn EventLog>, tenant: &str, count: u64, names: u64) -> (u64, u64) {
    let mut in_flight = tokio::task::JoinSet::new();
    let (mut first, mut last) = (u64::MAX, 0);
    let mut done = |event: Arc<broker::model::Event>| {
        (first, last) = (first.min(event.seq), last.max(event.seq));
    };
    for n in 0..count {
        if in_flight.len() >= IN_FLIGHT {
            done(in_flight.join_next().await.unwrap().unwrap());
        }
        let (log, event) = (log.clone(), new_event(tenant, n, names));
        in_flight.spawn(async move { log.append(event).await.expect("append") });
    }
    while let Some(event) = in_flight.join_next().await {
        done(event.unwrap());
    }
    (first, last)
}

fn median_and_p99(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

/// Times `PAGES` pages of `filter` in each tenant, interleaved, each below a cursor drawn from the
/// tenant's ids; returns (median, p99) in µs for small and large.
async fn time_pages(
    log: &dyn EventLog,
    ids: [(u64, u64); 2],
    filter: &EventFilter,
) -> ((f64, f64), (f64, f64)) {
    let pages = argument("--pages").map_or(PAGES, |pages| pages.parse().expect("--pages N"));
    let (mut small, mut large) = (Vec::with_capacity(pages), Vec::with_capacity(pages));
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..pages {
        for (tenant, (first, last), samples) in [("small", ids[0], &mut small), ("large", ids[1], &mut large)]
        {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // A cursor in the newest two fifths of the tenant's ids: a page of the name below it,
            // and more (events filled concurrently take ids a little out of turn).
            let fifth = (last - first) / 5;
            let before = first + 3 * fifth + seed % (2 * fifth);
            let started = Instant::now();
            let page = log
                .history(tenant, filter, PageStart::Before(before), 100, 1 << 20)
                .await
                .expect("page");
            samples.push(started.elapsed());
            assert_eq!(page.events.len(), 100, "a full page in {tenant}");
        }
    }
    (median_and_p99(&mut small), median_and_p99(&mut large))
}

/// The value after `name` on the command line.
fn argument(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|arg| arg == name)?;
    args.get(at + 1).cloned()
}

/// The event log to measure: a new LMDB store, or with `--nats <urls>` that JetStream cluster.
async fn event_log(dir: &std::path::Path, shutdown: &CancellationToken) -> Arc<dyn EventLog> {
    let Some(urls) = argument("--nats") else {
        let store = Arc::new(Store::open(dir, 8192).expect("store"));
        let (writer, _thread) = EventWriter::start(store.clone(), |_| {});
        return Arc::new(LmdbEventLog::new(store, writer));
    };
    let config = Config::parse_from(["broker", "--nats", urls.as_str()]);
    let cluster = Arc::new(Cluster::connect(&config, &urls).await.expect("the NATS cluster"));
    let log = JetStreamLog::start(cluster, Arc::new(Fanout::new(8)), shutdown.clone()).await;
    Arc::new(log.expect("the event log on JetStream"))
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shutdown = CancellationToken::new();
    let log = event_log(dir.path(), &shutdown).await;
    let started = Instant::now();
    let ids = [
        fill(&log, "small", SMALL, 5).await,
        fill(&log, "large", LARGE, 1_000).await,
    ];
    eprintln!("filled in {:.1} s", started.elapsed().as_secs_f64());
    let mut figures = serde_json::Map::new();
    // `room.3*` reaches one name in the small tenant and 111 in the large one (room.3, room.30 to
    // room.39, room.300 to room.399): a page seeks once per name it reaches.
    for (label, filter) in [
        ("one name", "room.3.msg"),
        ("a prefix of one name", "room.3.*"),
        ("a prefix of 111 names", "room.3*"),
        ("everything", "*"),
    ] {
        let filter = EventFilter::parse(filter).unwrap();
        let ((small_median, small_p99), (large_median, large_p99)) =
            time_pages(log.as_ref(), ids, &filter).await;
        let ratio = large_median / small_median;
        eprintln!(
            "page of 100, {label}: {small_median:.1} µs median (p99 {small_p99:.1}) in 1,000 events, \
             {large_median:.1} µs (p99 {large_p99:.1}) in 1,000,000: {ratio:.2}x (target 2x)"
        );
        figures.insert(
            label.replace(' ', "_"),
            json!({"small_median_us": small_median, "small_p99_us": small_p99,
                   "large_median_us": large_median, "large_p99_us": large_p99, "ratio": ratio}),
        );
    }
    println!("{}", serde_json::Value::Object(figures));
    shutdown.cancel();
}
