//! What a guest can and cannot reach beyond its own running time and memory: a guest that waits on
//! the host (a WASI sleep) is ended by a wall-clock bound and frees its instance; a guest that
//! leaks host handles is stopped at the resource cap; and the clocks and randomness a guest reads
//! come from the event, not from the host.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, TestServer, data_dir_with};

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
    let guests: Value = server
        .http
        .get(server.endpoint("/admin/guests"))
        .header("x-admin-token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
