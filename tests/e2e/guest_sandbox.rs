//! What a guest can and cannot reach beyond its own running time and memory: a guest that waits on
//! the host (a WASI sleep) is ended by a wall-clock bound and frees its instance; a guest that
//! leaks host handles is stopped at the resource cap; and the clocks and randomness a guest reads
//! come from the event, not from the host.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, data_dir_with};

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

#[tokio::test]
async fn a_guest_sleeping_on_the_host_is_answered_at_its_wall_clock_bound() {
    let dir = data_dir_with(&[("hostile.wasm", "hostile")]);
    // 50 ms of running time: the wall-clock bound is 1 s (20 x 50 ms, at least 1 s).
    let server = TestServer::start_in(dir, &["--guest_timeout_ms", "50"]).await;
    let jwt = server.signup("h", "hostile").await;
    let neighbour = server.signup("n", "neighbour").await;

    // Each asks its guest to sleep for an hour. Held together, they would each keep an instance
    // slot for as long as the client waited; they must all be answered within the bound instead.
    let sleepers: Vec<_> = (0..40)
        .map(|n| {
            let (server_url, http, jwt) = (server.url.clone(), server.http.clone(), jwt.clone());
            tokio::spawn(async move {
                let answer = http
                    .post(format!("{server_url}/insert"))
                    .bearer_auth(jwt)
                    .json(&json!({"event": "sleep", "data": n}))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .expect("a sleeping guest's insert is answered, not held");
                (answer.status(), answer.json::<Value>().await.unwrap())
            })
        })
        .collect();
    // Meanwhile another tenant's inserts go through.
    for n in 0..5 {
        assert_eq!(
            server.insert(&neighbour, "fine", json!(n)).await.0,
            StatusCode::OK
        );
    }
    for sleeper in sleepers {
        let (status, body) = sleeper.await.unwrap();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(body["error"], "guest did not answer within 1000 ms", "{body}");
    }
    // The tenant's next insert gets a fresh instance, and the failures are counted for the guest.
    assert_eq!(server.insert(&jwt, "fine", json!(1)).await.0, StatusCode::OK);
    let guests = server.admin_guests().await;
    let hostile = guests["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|guest| guest["tenant"] == "hostile")
        .expect("the hostile guest is listed");
    assert_eq!(hostile["failures"], 40, "{guests}");
    server
        .wait_for_log("guest did not answer within 1000 ms", 40)
        .await;
}

#[tokio::test]
async fn a_guest_leaking_host_handles_is_stopped_at_the_cap() {
    let dir = data_dir_with(&[("hostile.wasm", "hostile")]);
    let server = TestServer::start_in(dir, &[]).await;
    let jwt = server.signup("h", "hostile").await;
    // 5,000 pollables never dropped: past 1,000 the host refuses to make more and the call traps.
    let (status, body) = server.insert(&jwt, "leak-handles", json!(null)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("guest trapped"),
        "{body}"
    );
    // The leaking instance is gone: the next insert runs on a fresh one.
    assert_eq!(server.insert(&jwt, "fine", json!(1)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_guest_reads_the_events_time_and_no_host_clock() {
    let dir = data_dir_with(&[("hostile.wasm", "hostile")]);
    let server = TestServer::start_in(dir, &[]).await;
    let jwt = server.signup("h", "hostile").await;
    let mut stream = server.subscribe(&jwt).await;
    let before = now_ms();
    assert_eq!(server.insert(&jwt, "world", json!(null)).await.0, StatusCode::OK);
    let after = now_ms();
    let seen = stream.next().await.data;
    let wall = u128::from(seen["wall_ms"].as_u64().unwrap());
    // The wall clock reads the event's timestamp, taken while the insert was in flight ...
    assert!(
        (before..=after).contains(&wall),
        "{seen} not within {before}..={after}"
    );
    // ... and the monotonic clock reads the same instant, which the host's (time since boot)
    // never would.
    assert_eq!(
        u128::from(seen["monotonic_ns"].as_u64().unwrap()),
        wall * 1_000_000,
        "{seen}"
    );
    assert!(seen["random"].as_str().is_some_and(|r| !r.is_empty()), "{seen}");
}

#[tokio::test]
async fn warm_instances_never_serve_another_tenant() {
    // One guest file for every tenant (default.wasm): each tenant must still get instances of its
    // own, so that nothing a guest keeps in memory crosses tenants.
    let dir = data_dir_with(&[("default.wasm", "hostile")]);
    let server = TestServer::start_in(dir, &[]).await;
    let tenants = ["north", "south", "east"];
    let mut jwts = Vec::new();
    for tenant in tenants {
        jwts.push(server.signup(&format!("user-{tenant}"), tenant).await);
    }
    let mut streams = Vec::new();
    for jwt in &jwts {
        streams.push(server.subscribe(jwt).await);
    }
    // Rounds of concurrent inserts from all three tenants.
    for _ in 0..10 {
        let inserts = jwts
            .iter()
            .map(|jwt| server.insert(jwt, "last-tenant", json!(null)));
        for (status, body) in futures_util::future::join_all(inserts).await {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    for (tenant, stream) in tenants.iter().zip(&mut streams) {
        for event in stream.take(10).await {
            let previous = event.data["previous"].as_str().unwrap().to_owned();
            assert!(
                previous.is_empty() || previous == *tenant,
                "{tenant}'s insert ran on an instance that served {previous}"
            );
        }
    }
}

#[tokio::test]
async fn a_looping_guest_does_not_hold_up_other_requests() {
    let dir = data_dir_with(&[("spinner.wasm", "hostile")]);
    // Two seconds of running time for the loop.
    let server = TestServer::start_in(dir, &["--guest_timeout_ms", "2000"]).await;
    let spinner = server.signup("spin", "spinner").await;
    let neighbour = server.signup("calm", "neighbour").await;
    let looping = {
        let (request, jwt) = (server.http.post(server.endpoint("/insert")), spinner.clone());
        tokio::spawn(async move {
            let response = request
                .bearer_auth(jwt)
                .json(&json!({"event": "loop", "data": 1}))
                .send()
                .await;
            response.unwrap().status()
        })
    };
    // While it loops, another tenant's inserts, a login and a stream are served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..10 {
        assert_eq!(
            server.insert(&neighbour, "fine", json!(n)).await.0,
            StatusCode::OK
        );
    }
    server.login("calm").await;
    let mut stream = server.subscribe(&neighbour).await;
    assert_eq!(stream.next().await.data, json!(9));
    assert!(
        !looping.is_finished(),
        "all that was served while the guest was still looping"
    );
    assert_eq!(looping.await.unwrap(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_tenant_keeps_two_warm_instances() {
    let dir = data_dir_with(&[("warm.wasm", "hostile")]);
    let server = TestServer::start_in(dir, &[]).await;
    let jwt = server.signup("w", "warm").await;
    let mut stream = server.subscribe(&jwt).await;
    // Each call waits 200 ms inside the guest, so three at once need three instances.
    let round = || async {
        let inserts = (0..3).map(|_| server.insert(&jwt, "count-slowly", json!(null)));
        for (status, body) in futures_util::future::join_all(inserts).await {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    round().await;
    let mut first: Vec<u64> = stream
        .take(3)
        .await
        .iter()
        .map(|e| e.data["calls"].as_u64().unwrap())
        .collect();
    first.sort_unstable();
    assert_eq!(first, [1, 1, 1], "three fresh instances");
    // Two of the three were kept warm: the next three calls find two of them and one fresh one.
    round().await;
    let mut second: Vec<u64> = stream
        .take(3)
        .await
        .iter()
        .map(|e| e.data["calls"].as_u64().unwrap())
        .collect();
    second.sort_unstable();
    assert_eq!(second, [1, 2, 2], "two warm instances and a fresh one");
}

#[tokio::test]
async fn at_most_256_warm_instances_are_kept_in_all() {
    // One guest for every tenant; 300 tenants call it once each, one after another, through the
    // admin insert (no users needed), then once more.
    let dir = data_dir_with(&[("default.wasm", "hostile")]);
    let server = TestServer::start_in(dir, &[]).await;
    let admin_insert = |tenant: String| {
        let request = server
            .http
            .post(server.endpoint("/admin/insert"))
            .header("x-admin-token", crate::support::ADMIN_TOKEN)
            .json(&json!({"tenant_name": tenant, "event": "count", "data": null}));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    for _ in 0..2 {
        for tenant in 0..300 {
            admin_insert(format!("t{tenant}")).await;
        }
    }
    // The second call found a warm instance (its second call) for exactly 256 tenants.
    let mut warm = 0;
    for tenant in 0..300 {
        let response = server
            .http
            .get(server.endpoint("/admin/sse"))
            .query(&[("tenant", format!("t{tenant}").as_str()), ("events", "count")])
            .header("x-admin-token", crate::support::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let newest = crate::support::SseStream::new(response).next().await;
        match newest.data["calls"].as_u64() {
            Some(2) => warm += 1,
            Some(1) => {}
            other => panic!("t{tenant}: {other:?}"),
        }
    }
    assert_eq!(warm, 256, "warm instances kept across all tenants");
}
