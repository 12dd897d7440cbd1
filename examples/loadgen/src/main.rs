//! `broker-load`: drives any server that speaks the Broker HTTP API (this Broker or the original
//! `broker` crate) through its public endpoints only, and reports comparable figures. It creates its
//! own tenant and users, is bounded in time, and ends by printing one JSON object as its last line.
//!
//! Scenarios: `get` (plain GET /: the floor that inserts/s is compared against), `insert` and
//! `basic` (inserts/s and latency with JWT or Basic auth), `fanout`
//! (subscribers × publishers: delivery rate, end-to-end latency, lost/duplicated/out-of-order
//! events, judged from sequence numbers carried in the event data), `rooms` (the same with each
//! stream filtering one of `--rooms` rooms, judged per stream), `connections` (idle SSE
//! connections and the server's memory per connection), `presence` (a crowd connecting with and
//! without `?presence=true`: convergence, frames per stream, server CPU), `login` (logins/s:
//! argon2 cost), `noisy` (one tenant's flood felt by another) and `versioned` (compare-and-set
//! beside another tenant's flood, on the `versioned` guest).
//! With `--pid`, every scenario also reports the server's memory (anonymous vs file-backed) and
//! CPU, and all report this process's own CPU, so a saturated load generator shows.

mod api;
mod connections;
mod fanout;
mod limits;
mod noisy;
mod pocketbase;
mod presence;
mod probe;
mod procfs;
mod raw_sse;
mod report;
mod requests;
mod sequence;
mod sizes;
mod stamp;
mod stats;
mod versioned;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Scenario {
    Get,
    Insert,
    Basic,
    Fanout,
    Rooms,
    /// Tenant B's fan-out alone, then beside tenant A flooding inserts with `--clients` clients.
    Noisy,
    Connections,
    /// `--clients` users connect at once with plain streams, then with `?presence=true`.
    Presence,
    /// Tenant A's `--clients` writers advance versions (the `versioned` guest) alone, then beside
    /// tenant B doing the same as fast as it can: A's success rate and p99 in both.
    Versioned,
    Login,
}

/// Which server is under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Server {
    Broker,
    /// PocketBase: `insert`, `get` (its health check), `fanout` and `connections`.
    Pocketbase,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "broker-load",
    version,
    about = "Load generator for the Broker HTTP API",
    // A flag given twice takes its last value, so a script can add to its default flags.
    args_override_self = true
)]
pub struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8080; for a cluster, several, comma-separated:
    /// clients (subscribers and publishers alike) take them in turn.
    #[arg(long)]
    pub url: String,
    /// The server's admin token (to create this run's users); for PocketBase, EMAIL:PASSWORD of a
    /// superuser.
    #[arg(long = "admin-token")]
    pub admin_token: String,
    /// The server under test.
    #[arg(long = "target", value_enum, default_value = "broker")]
    pub server: Server,
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// How long the measured phase lasts.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Concurrent clients (publishers in `fanout`, connections in `connections`).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// SSE subscribers in `fanout` and `rooms`.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Rooms in `rooms`: subscriber i filters `room.<i mod rooms>.*`, each insert goes to a random room.
    #[arg(long, default_value_t = 1000)]
    pub rooms: usize,
    /// In `rooms`: the streams filter rooms nobody publishes to (what idle filtered streams cost).
    #[arg(long)]
    pub unmatched: bool,
    /// Total requests per second across clients; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// The server's process id, for memory and CPU figures (read from /proc/<pid>/status and stat).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Also draw the latency distribution to this file: `.svg`, or `.html` (the picture and a
    /// table of every figure).
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Samples this file's size (the server's `data.mdb`), and with `--pid` the server's RssFile
    /// and RssAnon, every second of the run: `size_samples` in the result.
    #[arg(long = "watch-file")]
    pub watch_file: Option<std::path::PathBuf>,
    /// With `--watch-file`: draws the samples over time to this SVG.
    #[arg(long = "size-report")]
    pub size_report: Option<std::path::PathBuf>,
    /// PEM file of a CA to trust (besides the web PKI) for an `https://` server with a private CA.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
}

impl Args {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.clamp(0.1, 3600.0))
    }

    /// The pause between one client's requests for the requested total rate, if any.
    pub fn client_interval(&self) -> Option<Duration> {
        (self.rate > 0.0).then(|| Duration::from_secs_f64(self.clients.max(1) as f64 / self.rate))
    }

    /// Connections this scenario holds open at once.
    fn sockets(&self) -> u64 {
        let clients = self.clients.max(1) as u64;
        match self.scenario {
            Scenario::Fanout | Scenario::Rooms => clients + self.subscribers as u64,
            Scenario::Noisy => clients + self.subscribers as u64 + 4,
            Scenario::Versioned => clients + 32,
            _ => clients,
        }
    }
}

/// Counts operations for the once-a-second progress line.
#[derive(Clone, Default)]
pub struct Progress {
    pub done: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
}

impl Progress {
    fn report_every_second(&self, label: &'static str) -> tokio::task::JoinHandle<()> {
        let progress = self.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "[{:>4.0}s] {label}: {} done, {} errors",
                    started.elapsed().as_secs_f64(),
                    progress.done.load(Ordering::Relaxed),
                    progress.errors.load(Ordering::Relaxed)
                );
            }
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fd_limit = limits::raise_open_files();
    let server_fd_limit = args.pid.and_then(limits::server_open_files);
    limits::warn_if_too_low(args.sockets(), fd_limit, server_fd_limit, args.pid);
    // Ask for the clock tick rate now, not in the middle of a measurement.
    procfs::clock_ticks_per_second();
    // reqwest's rustls backend needs a process-wide provider; aws-lc-rs, as the Broker host uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = match &args.ca {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading --ca {}", path.display()))?;
            Some(reqwest::Certificate::from_pem(&pem).with_context(|| format!("--ca {}", path.display()))?)
        }
        None => None,
    };
    let run_id = format!("{:x}", api::unix_micros());
    let nodes: Vec<String> = args
        .url
        .split(',')
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .filter(|url| !url.is_empty())
        .collect();
    anyhow::ensure!(!nodes.is_empty(), "--url names no server");
    let target = api::Target {
        url: nodes[0].clone(),
        nodes,
        admin_token: args.admin_token.clone(),
        run_id,
        ca,
        server: args.server,
    };
    let progress = Progress::default();
    let reporter = progress.report_every_second(match args.scenario {
        Scenario::Get => "requests",
        Scenario::Insert | Scenario::Basic | Scenario::Versioned => "inserts",
        Scenario::Fanout | Scenario::Rooms | Scenario::Noisy => "deliveries",
        Scenario::Connections => "connections",
        Scenario::Presence => "streams in",
        Scenario::Login => "logins",
    });
    let sampler = args
        .watch_file
        .clone()
        .map(|file| sizes::Sampler::start(file, args.pid));
    let mut result = match args.scenario {
        Scenario::Get => requests::gets(&target, &args, &progress).await?,
        Scenario::Insert => requests::inserts(&target, &args, false, &progress).await?,
        Scenario::Basic => requests::inserts(&target, &args, true, &progress).await?,
        Scenario::Login => requests::logins(&target, &args, &progress).await?,
        Scenario::Fanout | Scenario::Rooms => fanout::run(&target, &args, &progress).await?,
        Scenario::Noisy => noisy::run(&target, &args, &progress).await?,
        Scenario::Connections => connections::run(&target, &args, &progress).await?,
        Scenario::Presence => presence::run(&target, &args, &progress).await?,
        Scenario::Versioned => versioned::run(&target, &args, &progress).await?,
    };
    reporter.abort();
    if let (Some(sampler), Some(object)) = (sampler, result.as_object_mut()) {
        object.insert("size_samples".into(), sampler.finish().await);
    }
    if let Some(object) = result.as_object_mut() {
        object.insert(
            "target".into(),
            format!("{:?}", args.server).to_lowercase().into(),
        );
        object.insert("fd_limit".into(), fd_limit.into());
        object.insert("server_fd_limit".into(), server_fd_limit.into());
    }
    eprintln!("{}", human_summary(&result));
    if let Some(path) = &args.size_report {
        sizes::draw(path, &result)?;
        eprintln!("sizes drawn to {}", path.display());
    }
    if let Some(path) = &args.report {
        report::write(path, &result)?;
        eprintln!("report written to {}", path.display());
    }
    println!("{result}");
    Ok(())
}

/// A short line for people; the JSON line after it is for scripts.
fn human_summary(result: &serde_json::Value) -> String {
    let get = |key: &str| {
        result
            .get(key)
            .map(ToString::to_string)
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{}: {} ops/s, p50 {} ms, p99 {} ms, errors {}, lost {}, duplicated {}, out of order {}, \
         server cores {}, client cores {}",
        get("scenario"),
        get("per_second"),
        result["latency"]["p50_ms"],
        result["latency"]["p99_ms"],
        get("errors"),
        get("lost"),
        get("duplicated"),
        get("out_of_order"),
        get("server_cores"),
        get("client_cores"),
    )
}
