//! What the guest step costs. Run with `cargo bench --bench guest_cost` (release build).
//!
//! 1. Per call, on the built-in pass-through guest: a warm instance (what Broker does) and a fresh
//!    instance per call, both awaited on a tokio runtime as the insert path does.
//!    Also the whole guest step as the insert path runs it: the data serialised, `Guests::check`.
//! 2. Per insert, end to end over HTTP on loopback: a server running the default guest against one
//!    started with `--bypass_guests`, measured in the same run, interleaved, as a ratio. A second
//!    `--bypass_guests` server in the same rotation is the control: two identical servers differ by
//!    this much (each its own database file and fsyncs), and a smaller difference is not measured.
//!
//! 3. Per call, the JavaScript example guest (`examples/guests-js/validator.wasm`, built by
//!    scripts/test with componentize-js), warm, beside the Rust pass-through.
//!
//! The last line printed is one JSON object with every figure.

use std::time::{Duration, Instant};

use broker::config::Config;
use broker::guests::{GuestEngine, GuestEvent, GuestLimits, Guests, LoadedGuest, PASSTHROUGH_WASM};
use clap::Parser;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CALLS: usize = 20_000;
const INSERTS: usize = 5_000;
/// Guest steps timed after evicting the caches (each eviction walks 32 MiB).
const COLD_CALLS: usize = 2_000;

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index].as_secs_f64() * 1e6
}

fn event<'a>(tenant: &'a str, scopes: &'a [String]) -> GuestEvent<'a> {
    GuestEvent {
        tenant,
        username: "bench",
        scopes,
        event: "tick",
        data: r#"{"name":"Ada","items":[1,2,3],"paid":true}"#,
        timestamp: 1_700_000_000_000,
    }
}

async fn time_calls(guest: &LoadedGuest, tenant_of: impl Fn(usize) -> String) -> Vec<Duration> {
    let scopes = vec!["news:get".to_owned()];
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let tenant = tenant_of(i);
        let started = Instant::now();
        guest
            .validate(&event(&tenant, &scopes))
            .await
            .expect("passthrough accepts");
        samples.push(started.elapsed());
    }
    samples
}

async fn start_server(extra: &[&str]) -> (String, CancellationToken, tempfile::TempDir) {
    let dir = tempfile::TempDir::new().unwrap();
    let db = dir.path().join("db").display().to_string();
    let guests = dir.path().join("guests").display().to_string();
    let mut args = vec!["broker", "--port", "0", "--db", &db, "--guests", &guests];
    args.extend_from_slice(extra);
    let config = Config::parse_from(args);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let listeners = broker::Listeners {
        plain: listener,
        tls: None,
        metrics: None,
    };
    tokio::spawn(broker::run(config, listeners, shutdown.clone()));
    (url, shutdown, dir)
}

async fn login(http: &reqwest::Client, url: &str) -> String {
    let user = json!({"username": "bench", "password": "pw", "tenant_name": "t", "admin_token": "letmein"});
    for _ in 0..100 {
        if http
            .post(format!("{url}/create_user"))
            .json(&user)
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer: serde_json::Value = http
        .post(format!("{url}/login"))
        .json(&json!({"username": "bench", "password": "pw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["jwt"].as_str().unwrap().to_owned()
}

/// Alternates one insert on each server, so that machine noise falls on all alike.
async fn time_inserts_interleaved<const N: usize>(
    http: &reqwest::Client,
    servers: [(&str, &str); N],
    samples: &mut [Vec<Duration>; N],
) {
    let body = json!({"event": "tick", "data": {"name": "Ada", "items": [1, 2, 3], "paid": true}});
    for round in 0..INSERTS {
        // Each round starts with the next server, so none always goes first.
        for which in (0..N).map(|k| (round + k) % N) {
            let (url, jwt) = servers[which];
            let started = Instant::now();
            let response = http
                .post(format!("{url}/insert"))
                .bearer_auth(jwt)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
            samples[which].push(started.elapsed());
        }
    }
}

fn main() {
    let limits = GuestLimits {
        timeout: Duration::from_millis(50),
        memory_bytes: 32 << 20,
    };
    // The pass-through never reads state, but the engine is built as Broker builds it, on a store.
    let state_dir = tempfile::TempDir::new().unwrap();
    let store = std::sync::Arc::new(broker::store::Store::open(state_dir.path(), 64).unwrap());
    let (writer, _writer_thread) = broker::store::writer::EventWriter::start(store.clone(), |_| {});
    let events = std::sync::Arc::new(broker::store::LmdbEventLog::new(store, writer));
    let engine = GuestEngine::new(limits, None, events.clone()).unwrap();
    let guest = engine.load("passthrough", PASSTHROUGH_WASM).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut warm = runtime.block_on(time_calls(&guest, |_| "one-tenant".to_owned()));
    // The same, from a task on a runtime worker thread, where the server's insert path runs it.
    let on_worker = {
        let guest = guest.clone();
        runtime.block_on(async move {
            tokio::spawn(async move { time_calls(&guest, |_| "worker".to_owned()).await }).await
        })
    };
    let mut on_worker = on_worker.unwrap();
    // The guest step as the insert path runs it: the parsed data serialised for the guest, then
    // `Guests::check` (the tenant's guest looked up, called on a warm instance, counted).
    let step = runtime.block_on(async {
        let db = state_dir.path().join("db").display().to_string();
        let guests_dir = state_dir.path().join("guests").display().to_string();
        let config = Config::parse_from(["broker", "--db", &db, "--guests", &guests_dir]);
        let guests = Guests::start(&config, events.clone(), CancellationToken::new())
            .await
            .unwrap();
        let data = json!({"name": "Ada", "items": [1, 2, 3], "paid": true});
        let scopes = vec!["news:get".to_owned()];
        let (mut samples, mut cold) = (Vec::with_capacity(CALLS), Vec::with_capacity(COLD_CALLS));
        // Between two inserts a server does other work (the commit, other requests) that evicts
        // the guest's memory from the caches: the same step after walking a buffer larger than them.
        let mut other_work = vec![0u8; 32 << 20];
        for call in 0..CALLS + COLD_CALLS {
            if call >= CALLS {
                for byte in other_work.iter_mut().step_by(64) {
                    *byte = byte.wrapping_add(1);
                }
                std::hint::black_box(&other_work);
            }
            let started = Instant::now();
            let text = data.to_string();
            let event = GuestEvent {
                data: &text,
                ..event("step-tenant", &scopes)
            };
            guests.check(&event).await.expect("passthrough accepts");
            let elapsed = started.elapsed();
            if call < CALLS {
                samples.push(elapsed);
            } else {
                cold.push(elapsed);
            }
        }
        (samples, cold)
    });
    let (mut step, mut step_cold) = step;
    // Past the warm-instance cap, every call with a new tenant instantiates afresh.
    let mut fresh = runtime.block_on(time_calls(&guest, |i| format!("tenant-{i}")));
    drop(guest);
    let js_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/guests-js/validator.wasm");
    let mut js_warm = match std::fs::read(&js_path) {
        Ok(wasm) => {
            let compiling = Instant::now();
            let js = engine
                .load("validator.js", &wasm)
                .expect("the JavaScript guest loads");
            println!(
                "JavaScript guest compiled in {:.1} s",
                compiling.elapsed().as_secs_f64()
            );
            runtime.block_on(time_calls(&js, |_| "js-tenant".to_owned()))
        }
        Err(_) => {
            println!(
                "no {}: build it with `npm ci && npm run build` there",
                js_path.display()
            );
            Vec::new()
        }
    };

    let (mut with_guest, mut bypass, mut control) = runtime.block_on(async {
        let (guest_url, stop_a, _dir_a) = start_server(&[]).await;
        let (bypass_url, stop_b, _dir_b) = start_server(&["--bypass_guests"]).await;
        let (control_url, stop_c, _dir_c) = start_server(&["--bypass_guests"]).await;
        let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::new();
        let guest_jwt = login(&http, &guest_url).await;
        let bypass_jwt = login(&http, &bypass_url).await;
        let control_jwt = login(&http, &control_url).await;
        let mut samples = [Vec::new(), Vec::new(), Vec::new()];
        let servers = [
            (guest_url.as_str(), guest_jwt.as_str()),
            (bypass_url.as_str(), bypass_jwt.as_str()),
            (control_url.as_str(), control_jwt.as_str()),
        ];
        time_inserts_interleaved(&http, servers, &mut samples).await;
        let [with_guest, bypass, control] = samples;
        for stop in [stop_a, stop_b, stop_c] {
            stop.cancel();
        }
        (with_guest, bypass, control)
    });

    let figures = json!({
        "guest_call_warm_p50_us": percentile(&mut warm, 0.5),
        "guest_call_warm_p99_us": percentile(&mut warm, 0.99),
        "guest_call_warm_on_worker_p50_us": percentile(&mut on_worker, 0.5),
        "guest_call_fresh_instance_p50_us": percentile(&mut fresh, 0.5),
        "guest_step_as_inserted_p50_us": percentile(&mut step, 0.5),
        "guest_step_as_inserted_p99_us": percentile(&mut step, 0.99),
        "guest_step_caches_cold_p50_us": percentile(&mut step_cold, 0.5),
        "js_guest_call_warm_p50_us": (!js_warm.is_empty()).then(|| percentile(&mut js_warm, 0.5)),
        "js_guest_call_warm_p99_us": (!js_warm.is_empty()).then(|| percentile(&mut js_warm, 0.99)),
        "insert_with_guest_p50_us": percentile(&mut with_guest, 0.5),
        "insert_bypass_p50_us": percentile(&mut bypass, 0.5),
        "insert_with_guest_p99_us": percentile(&mut with_guest, 0.99),
        "insert_bypass_p99_us": percentile(&mut bypass, 0.99),
        "insert_control_bypass_p50_us": percentile(&mut control, 0.5),
    });
    let added = figures["insert_with_guest_p50_us"].as_f64().unwrap()
        - figures["insert_bypass_p50_us"].as_f64().unwrap();
    let ratio = figures["insert_with_guest_p50_us"].as_f64().unwrap()
        / figures["insert_bypass_p50_us"].as_f64().unwrap();
    println!(
        "guest call, warm instance:        p50 {:>7.2} µs",
        figures["guest_call_warm_p50_us"].as_f64().unwrap()
    );
    println!(
        "guest step as the insert runs it: p50 {:>7.2} µs",
        figures["guest_step_as_inserted_p50_us"].as_f64().unwrap()
    );
    println!(
        "the same, caches evicted first:   p50 {:>7.2} µs",
        figures["guest_step_caches_cold_p50_us"].as_f64().unwrap()
    );
    println!(
        "guest call, fresh instance:       p50 {:>7.2} µs",
        figures["guest_call_fresh_instance_p50_us"].as_f64().unwrap()
    );
    if let Some(js) = figures["js_guest_call_warm_p50_us"].as_f64() {
        println!("JavaScript guest call, warm:       p50 {js:>7.2} µs");
    }
    let control_difference = figures["insert_control_bypass_p50_us"].as_f64().unwrap()
        - figures["insert_bypass_p50_us"].as_f64().unwrap();
    println!("insert p50 with default guest / bypassed: ratio {ratio:.3}, {added:+.1} µs");
    println!("insert p50, a second bypassed server (control): {control_difference:+.1} µs");
    let mut all = figures;
    all["insert_p50_ratio_guest_vs_bypass"] = json!(ratio);
    all["insert_p50_added_us"] = json!(added);
    all["insert_p50_control_difference_us"] = json!(control_difference);
    println!("{all}");
}
