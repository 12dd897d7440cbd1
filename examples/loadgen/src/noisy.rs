//! `noisy`: is one tenant's flood felt by another? Tenant B runs a steady `fanout` (4 publishers at
//! `--rate` inserts/s in all, default 100, and `--subscribers` streams), first alone, then while
//! tenant A floods inserts with `--clients` closed-loop clients (32 in `scripts/perf`). A's clients
//! behave as the JavaScript client does: past a limit (429) they wait the `Retry-After` they were
//! given. The line reports B's insert and delivery p99 in both phases and their ratios, and what A
//! got through and was refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::{Auth, Target, retry_after_secs, wait_unless_stopped};
use crate::{Args, Progress, Scenario, fanout};

/// B's publishers: enough to cover each insert's commit wait at 100/s.
const B_PUBLISHERS: usize = 4;
/// How long A floods before B's second phase starts, so that B meets A's steady state.
const FLOOD_WARMUP: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Flood {
    accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// One flooding client of tenant A: inserts back to back; on 429 sleeps for `Retry-After`.
async fn flood(target: Target, auth: Auth, client: usize, stop: Arc<AtomicBool>, counts: Arc<Flood>) {
    let Ok(http) = target.new_client() else { return };
    let url = format!("{}/insert", target.url);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = json!({"event": "flood", "data": {"client": client, "n": n}});
        match auth.apply(http.post(&url)).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                counts.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = response.bytes().await;
            }
            Ok(response) if response.status().as_u16() == 429 => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                let wait = retry_after_secs(&response);
                let _ = response.bytes().await;
                wait_unless_stopped(wait, &stop).await;
            }
            Ok(_) | Err(_) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// B's p99s (insert, delivery) from a `fanout` line.
fn p99s(line: &Value) -> (f64, f64) {
    let p99 = |key: &str| line[key]["p99_ms"].as_f64().unwrap_or(0.0);
    (p99("insert_latency"), p99("latency"))
}

pub async fn run(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<Value> {
    let b_args = Args {
        scenario: Scenario::Fanout,
        clients: B_PUBLISHERS,
        rate: if args.rate > 0.0 { args.rate } else { 100.0 },
        ..args.clone()
    };
    eprintln!("noisy: tenant B alone");
    let alone = fanout::run(&target.in_tenant("b-alone"), &b_args, progress).await?;

    let flooding = target.in_tenant("a");
    let setup = flooding.new_client()?;
    let flooders = flooding
        .users(&setup, "flooder", args.clients.max(1), false)
        .await?;
    let (stop, counts) = (Arc::new(AtomicBool::new(false)), Arc::new(Flood::default()));
    let tasks: Vec<_> = flooders
        .into_iter()
        .enumerate()
        .map(|(client, auth)| {
            let target = flooding.for_client(client);
            tokio::spawn(flood(target, auth, client, stop.clone(), counts.clone()))
        })
        .collect();
    eprintln!("noisy: tenant A floods with {} clients", args.clients.max(1));
    tokio::time::sleep(FLOOD_WARMUP).await;
    let (accepted_before, refused_before) = (
        counts.accepted.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    eprintln!("noisy: tenant B beside the flood");
    let noisy = fanout::run(&target.in_tenant("b-noisy"), &b_args, progress).await?;
    let flood_seconds = started.elapsed().as_secs_f64();
    let accepted = counts.accepted.load(Ordering::Relaxed) - accepted_before;
    let refused = counts.refused.load(Ordering::Relaxed) - refused_before;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }

    let ((insert_alone, delivery_alone), (insert_noisy, delivery_noisy)) = (p99s(&alone), p99s(&noisy));
    let ratio = |noisy: f64, alone: f64| if alone > 0.0 { noisy / alone } else { 0.0 };
    let lost = |line: &Value| line["lost"].as_u64().unwrap_or(0) + line["errors"].as_u64().unwrap_or(0);
    Ok(json!({
        "scenario": "noisy",
        "clients": args.clients, "subscribers": args.subscribers, "rate": b_args.rate,
        "per_second": noisy["per_second"],
        "latency": noisy["latency"],
        "b_alone": {"insert_p99_ms": insert_alone, "delivery_p99_ms": delivery_alone, "lost_or_failed": lost(&alone)},
        "b_noisy": {"insert_p99_ms": insert_noisy, "delivery_p99_ms": delivery_noisy, "lost_or_failed": lost(&noisy)},
        "insert_p99_ratio": ratio(insert_noisy, insert_alone),
        "delivery_p99_ratio": ratio(delivery_noisy, delivery_alone),
        "flood": {
            "clients": args.clients,
            "accepted_per_second": accepted as f64 / flood_seconds,
            "refused_per_second": refused as f64 / flood_seconds,
            "failed": counts.failed.load(Ordering::Relaxed),
        },
        "errors": lost(&noisy),
        "server_cores": noisy["server_cores"],
        "client_cores": noisy["client_cores"],
    }))
}
