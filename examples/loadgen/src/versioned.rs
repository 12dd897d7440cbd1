//! `versioned`: compare-and-set beside another tenant's flood. The server runs the `versioned`
//! example guest for every tenant (`scripts/perf` puts it in place): an event's data must carry the
//! next `version` of its name, read by the guest from the tenant's state and checked again at the
//! commit. Tenant A's `--clients` writers each advance a name of their own (`doc.<client>`), one
//! version at a time, first alone, then while tenant B's `FLOODERS` writers do the same to theirs
//! as fast as they can (B honours `Retry-After` on a 429, as the JavaScript client does).
//!
//! Every one of A's inserts is a valid next version, so any refusal is the server's doing: a 400
//! from the guest judging on a state older than the writer's own last insert, a 409 from
//! compare-and-set contention, a 503 from contention that never settled. The line reports A's
//! success rate and insert p99 in both phases, their ratios, A's refusals by status and B's rate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::{Auth, Target, retry_after_secs, wait_unless_stopped};
use crate::stats::Latencies;
use crate::{Args, Progress};

/// Tenant B's writers.
const FLOODERS: usize = 32;
/// How long B floods before A's second phase starts, so that A meets B's steady state.
const FLOOD_WARMUP: Duration = Duration::from_secs(2);

/// What one phase of A's writers got.
#[derive(Default)]
struct Phase {
    sent: u64,
    accepted: u64,
    /// Answers other than 200, by status (0: no answer).
    refused: BTreeMap<u16, u64>,
    latencies: Latencies,
}

impl Phase {
    fn merge(&mut self, other: Phase) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        for (status, count) in other.refused {
            *self.refused.entry(status).or_default() += count;
        }
        self.latencies.merge(other.latencies);
    }

    fn success_rate(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.accepted as f64 / self.sent as f64
        }
    }

    fn report(&mut self, seconds: f64) -> Value {
        let refused: serde_json::Map<String, Value> = (self.refused.iter())
            .map(|(status, count)| (status.to_string(), json!(count)))
            .collect();
        json!({
            "sent": self.sent, "accepted": self.accepted, "success_rate": self.success_rate(),
            "per_second": self.accepted as f64 / seconds, "refused": refused,
            "latency": self.latencies.summary(),
        })
    }
}

/// One insert of version `version` of `name`: the answer's status (0: none) and, for a 429, its
/// `Retry-After` in seconds.
async fn insert_version(
    http: &reqwest::Client,
    target: &Target,
    auth: &Auth,
    name: &str,
    version: u64,
) -> (u16, u64) {
    let body = json!({"event": name, "data": {"version": version}});
    match auth
        .apply(http.post(format!("{}/insert", target.url)))
        .json(&body)
        .send()
        .await
    {
        Ok(response) => {
            let (status, retry_after) = (response.status().as_u16(), retry_after_secs(&response));
            let _ = response.bytes().await;
            (status, retry_after)
        }
        Err(_) => (0, 1),
    }
}

/// One of A's writers for `duration`: advances `doc.<client>` from version 1.
async fn writer(target: Target, auth: Auth, client: usize, duration: Duration, progress: Progress) -> Phase {
    let Ok(http) = target.new_client() else {
        return Phase::default();
    };
    let (name, mut version, mut phase) = (format!("doc.{client}"), 1, Phase::default());
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let sent = Instant::now();
        let (status, _) = insert_version(&http, &target, &auth, &name, version).await;
        phase.sent += 1;
        if status == 200 {
            phase.latencies.record(sent.elapsed());
            phase.accepted += 1;
            version += 1;
            progress.done.fetch_add(1, Ordering::Relaxed);
        } else {
            *phase.refused.entry(status).or_default() += 1;
            progress.errors.fetch_add(1, Ordering::Relaxed);
            // A refusal may mean the version did land (an answer lost): the guest says which.
            if status == 400 {
                version += 1;
            }
        }
    }
    phase
}

/// A's writers, one phase.
async fn a_phase(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<(Phase, f64)> {
    let setup = target.new_client()?;
    let auths = target.users(&setup, "writer", args.clients.max(1), false).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (auths.into_iter().enumerate())
        .map(|(client, auth)| {
            let target = target.for_client(client);
            tokio::spawn(writer(target, auth, client, args.duration(), progress.clone()))
        })
        .collect();
    let mut phase = Phase::default();
    for task in tasks {
        phase.merge(task.await?);
    }
    Ok((phase, started.elapsed().as_secs_f64()))
}

/// One of B's writers: advances `flood.<client>` as fast as it is let.
async fn flooder(target: Target, auth: Auth, client: usize, stop: Arc<AtomicBool>, accepted: Arc<AtomicU64>) {
    let Ok(http) = target.new_client() else { return };
    let (name, mut version) = (format!("flood.{client}"), 1);
    while !stop.load(Ordering::Relaxed) {
        match insert_version(&http, &target, &auth, &name, version).await {
            (200, _) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                version += 1;
            }
            (400, _) => version += 1,
            (429, wait) => wait_unless_stopped(wait, &stop).await,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

pub async fn run(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<Value> {
    eprintln!("versioned: tenant A alone");
    let (mut alone, alone_seconds) = a_phase(&target.in_tenant("a-alone"), args, progress).await?;

    let flooding = target.in_tenant("b");
    let setup = flooding.new_client()?;
    let auths = flooding.users(&setup, "flooder", FLOODERS, false).await?;
    let (stop, accepted) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let tasks: Vec<_> = (auths.into_iter().enumerate())
        .map(|(client, auth)| {
            let target = flooding.for_client(client);
            tokio::spawn(flooder(target, auth, client, stop.clone(), accepted.clone()))
        })
        .collect();
    eprintln!("versioned: tenant B floods with {FLOODERS} writers");
    tokio::time::sleep(FLOOD_WARMUP).await;
    let accepted_before = accepted.load(Ordering::Relaxed);
    eprintln!("versioned: tenant A beside the flood");
    let (mut beside, beside_seconds) = a_phase(&target.in_tenant("a-beside"), args, progress).await?;
    let flood_per_second = (accepted.load(Ordering::Relaxed) - accepted_before) as f64 / beside_seconds;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }

    let (alone_line, beside_line) = (alone.report(alone_seconds), beside.report(beside_seconds));
    let p99 = |line: &Value| line["latency"]["p99_ms"].as_f64().unwrap_or(0.0);
    let ratio = |beside: f64, alone: f64| if alone > 0.0 { beside / alone } else { 0.0 };
    let refusals = (beside.sent - beside.accepted) + (alone.sent - alone.accepted);
    Ok(json!({
        "scenario": "versioned",
        "clients": args.clients,
        "per_second": beside_line["per_second"],
        "latency": beside_line["latency"],
        "a_alone": alone_line,
        "a_beside_flood": beside_line,
        "success_rate_ratio": ratio(beside.success_rate(), alone.success_rate()),
        "p99_ratio": ratio(p99(&beside_line), p99(&alone_line)),
        "flood": {"writers": FLOODERS, "accepted_per_second": flood_per_second},
        "errors": refusals,
    }))
}
