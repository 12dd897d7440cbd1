//! Request-loop scenarios: `get` (plain GET /, the server's floor cost per request), `insert`/`basic`
//! (POST /insert with JWT or Basic auth) and `login`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};

use crate::api::{Auth, PASSWORD, Target};
use crate::probe::{Probe, Samples};
use crate::stats::Latencies;
use crate::{Args, Progress};

/// What the client loops achieved, and what the run cost.
struct Totals {
    ok: u64,
    errors: u64,
    latencies: Latencies,
    elapsed: f64,
    samples: Samples,
}

impl Totals {
    /// The scenario's JSON line: counts, rate, latency, memory and CPU.
    fn report(mut self, scenario: &str, args: &Args) -> Value {
        let mut result = json!({
            "scenario": scenario, "clients": args.clients, "seconds": self.elapsed, "rate": args.rate,
            "ok": self.ok, "errors": self.errors, "per_second": self.ok as f64 / self.elapsed,
            "latency": self.latencies.summary(),
        });
        self.samples.add_to(&mut result);
        result
    }
}

/// Runs `clients` loops of `one_request` until the time is up; each client has its own connection.
async fn run_clients<F, Fut>(
    target: &Target,
    args: &Args,
    progress: &Progress,
    one_request: F,
) -> anyhow::Result<Totals>
where
    F: Fn(reqwest::Client, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let clients = (0..args.clients.max(1))
        .map(|_| target.new_client())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut probe = Probe::start(args.pid);
    let deadline = tokio::time::Instant::now() + args.duration();
    probe.sample_during_at(deadline - args.duration() / 2);
    let interval = args.client_interval();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(client, http)| {
            let (one_request, progress) = (one_request.clone(), progress.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Latencies::default());
                let mut next = tokio::time::Instant::now();
                let mut n = 0u64;
                while tokio::time::Instant::now() < deadline {
                    if let Some(interval) = interval {
                        tokio::time::sleep_until(next).await;
                        next += interval;
                    }
                    let sent = Instant::now();
                    if one_request(http.clone(), client, n).await {
                        latencies.record(sent.elapsed());
                        ok += 1;
                        progress.done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors += 1;
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
                (ok, errors, latencies)
            })
        })
        .collect();
    let (mut ok, mut errors, mut latencies) = (0, 0, Latencies::default());
    for task in tasks {
        let (o, e, l) = task.await.expect("client task");
        ok += o;
        errors += e;
        latencies.merge(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    probe.end_phase();
    Ok(Totals {
        ok,
        errors,
        latencies,
        elapsed,
        samples: probe.finish().await,
    })
}

/// Closed-loop `GET /` (PocketBase: `GET /api/health`): what a request costs with no auth and no
/// store, to compare inserts against.
pub async fn gets(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<Value> {
    let path = match target.server {
        crate::Server::Broker => "/",
        crate::Server::Pocketbase => "/api/health",
    };
    let url = reqwest::Url::parse(&format!("{}{path}", target.url))?;
    let totals = run_clients(target, args, progress, move |http, _, _| {
        let request = http.get(url.clone());
        async move {
            match request.send().await {
                // Read the body so the connection is reused for the next request.
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await?;
    Ok(totals.report("get", args))
}

pub async fn inserts(
    target: &Target,
    args: &Args,
    basic: bool,
    progress: &Progress,
) -> anyhow::Result<Value> {
    let setup = target.new_client()?;
    let auths: Vec<Auth> = target.users(&setup, "writer", args.clients.max(1), basic).await?;
    // Each client inserts through its own node (clients take the --url nodes in turn).
    let targets: std::sync::Arc<Vec<Target>> =
        std::sync::Arc::new((0..auths.len()).map(|client| target.for_client(client)).collect());
    let totals = run_clients(target, args, progress, move |http, client, n| {
        let (targets, auth) = (targets.clone(), auths[client].clone());
        async move {
            let data = json!({"client": client, "n": n});
            targets[client]
                .insert(&http, &auth, "load", &data)
                .await
                .unwrap_or(false)
        }
    })
    .await?;
    Ok(totals.report(if basic { "basic" } else { "insert" }, args))
}

pub async fn logins(target: &Target, args: &Args, progress: &Progress) -> anyhow::Result<Value> {
    let setup = target.new_client()?;
    let mut usernames = Vec::new();
    for index in 0..args.clients.max(1) {
        let username = target.username("login", index);
        target.create_user(&setup, &username).await?;
        usernames.push(username);
    }
    let url = format!("{}/login", target.url);
    let totals = run_clients(target, args, progress, move |http, client, _| {
        let body = json!({"username": usernames[client], "password": PASSWORD});
        let url = url.clone();
        async move {
            http.post(&url)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await?;
    Ok(totals.report("login", args))
}
