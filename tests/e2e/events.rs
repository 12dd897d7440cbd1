//! Events: insert, replay on connect, live delivery, resume, tenant isolation, slow subscribers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestServer};

#[tokio::test]
async fn insert_validates_its_body_and_its_caller() {
    let server = TestServer::start().await;
    let jwt = server.signup("ivy", "t").await;
    let (status, body) = server.insert(&jwt, "", json!(1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = server.insert(&jwt, "bad\nid:9", json!(1)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "event names cannot forge SSE lines"
    );
    let (status, _) = server.insert(&jwt, " spaced", json!(1)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "SSE readers would drop the leading space"
    );
    let missing_data = server
        .http
        .post(server.endpoint("/insert"))
        .bearer_auth(&jwt)
        .json(&json!({"event": "e"}));
    let (status, body) = crate::support::status_and_json(missing_data.send().await.unwrap()).await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({"error": "missing field `data`"}))
    );
    assert_eq!(
        server.insert(&jwt, "nothing", Value::Null).await.0,
        StatusCode::OK,
        "null data is allowed"
    );

    assert_eq!(
        server.insert("forged.jwt.token", "e", json!(1)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let anonymous = server
        .http
        .post(server.endpoint("/insert"))
        .json(&json!({"event": "e", "data": 1}));
    assert_eq!(anonymous.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let sse = server.http.get(server.endpoint("/sse")).send().await.unwrap();
    assert_eq!(sse.status(), StatusCode::UNAUTHORIZED, "no anonymous streams");

    let basic = server
        .http
        .post(server.endpoint("/insert"))
        .basic_auth("ivy", Some(PASSWORD));
    let response = basic
        .json(&json!({"event": "by-basic", "data": {"ok": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_new_subscriber_gets_the_latest_of_each_event_then_live_events() {
    let server = TestServer::start().await;
    let jwt = server.signup("ann", "t").await;
    server.insert_ok(&jwt, "profile", json!({"name": "a"})).await;
    server.insert_ok(&jwt, "cart", json!([1])).await;
    let newest_profile = server.insert_ok(&jwt, "profile", json!({"name": "b"})).await;

    let mut stream = server.subscribe(&jwt).await;
    let replay = stream.take(2).await;
    assert_eq!(replay[0].event, "cart", "oldest first");
    assert_eq!(replay[0].data, json!([1]));
    assert_eq!(
        (replay[1].event.as_str(), replay[1].id),
        ("profile", newest_profile)
    );
    assert_eq!(replay[1].data, json!({"name": "b"}));
    stream.expect_quiet(Duration::from_millis(200)).await;

    let live = server.insert_ok(&jwt, "cart", json!([1, 2])).await;
    let event = stream.next().await;
    assert_eq!(
        (event.event.as_str(), event.id, event.data),
        ("cart", live, json!([1, 2]))
    );
}

#[tokio::test]
async fn every_insert_is_delivered_in_order_with_no_gap_or_duplicate() {
    let server = TestServer::start().await;
    let jwt = server.signup("fast", "t").await;
    let mut stream = server.subscribe(&jwt).await;
    let mut expected = Vec::new();
    for i in 0..50 {
        expected.push(server.insert_ok(&jwt, "same-name", json!({"i": i})).await);
    }
    let received = stream.take(50).await;
    assert_eq!(received.iter().map(|e| e.id).collect::<Vec<_>>(), expected);
    assert_eq!(
        received[49].data,
        json!({"i": 49}),
        "repeats of one name are not coalesced"
    );
    assert!(
        expected.windows(2).all(|w| w[1] == w[0] + 1),
        "per-tenant sequences: {expected:?}"
    );
}

#[tokio::test]
async fn last_event_id_resumes_after_that_event_then_goes_live() {
    let server = TestServer::start().await;
    let jwt = server.signup("res", "t").await;
    let seqs: Vec<u64> = futures_util::future::join_all((0..5).map(|i| {
        let (server, jwt) = (&server, &jwt);
        async move { server.insert_ok(jwt, "e", json!(i)).await }
    }))
    .await;
    let mut seqs = seqs;
    seqs.sort_unstable();

    let mut stream = server.subscribe_from(&jwt, Some(seqs[1])).await;
    let resumed: Vec<u64> = stream.take(3).await.iter().map(|e| e.id).collect();
    assert_eq!(resumed, seqs[2..]);
    let live = server.insert_ok(&jwt, "e", json!("live")).await;
    assert_eq!(stream.next().await.id, live);
    stream.expect_quiet(Duration::from_millis(200)).await;

    let by_query = server
        .http
        .get(server.endpoint(&format!("/sse?last_event_id={}", seqs[3])));
    let mut stream = crate::support::SseStream::new(by_query.bearer_auth(&jwt).send().await.unwrap());
    assert_eq!(
        stream.take(2).await.iter().map(|e| e.id).collect::<Vec<_>>(),
        [seqs[4], live]
    );
}

#[tokio::test]
async fn tenants_never_see_each_others_events() {
    let server = TestServer::start().await;
    let alice = server.signup("alice", "acme").await;
    let bob = server.signup("bob", "globex").await;
    server.insert_ok(&alice, "secret", json!("acme only")).await;

    let mut bob_stream = server.subscribe(&bob).await;
    let mut alice_stream = server.subscribe(&alice).await;
    assert_eq!(alice_stream.next().await.data, json!("acme only"));
    bob_stream.expect_quiet(Duration::from_millis(300)).await;

    let inserts = (0..40).map(|i| {
        let (server, alice, bob) = (&server, &alice, &bob);
        async move {
            if i % 2 == 0 {
                server
                    .insert_ok(alice, "n", json!({"tenant": "acme", "i": i}))
                    .await
            } else {
                server
                    .insert_ok(bob, "n", json!({"tenant": "globex", "i": i}))
                    .await
            }
        }
    });
    futures_util::future::join_all(inserts).await;
    let at_alice = alice_stream.take(20).await;
    let at_bob = bob_stream.take(20).await;
    assert!(at_alice.iter().all(|e| e.data["tenant"] == "acme"));
    assert!(at_bob.iter().all(|e| e.data["tenant"] == "globex"));
    alice_stream.expect_quiet(Duration::from_millis(200)).await;
    bob_stream.expect_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn moving_a_user_to_another_tenant_closes_their_stream_on_the_old_one() {
    let server = TestServer::start().await;
    let jwt = server.signup("mover", "old").await;
    let stayer = server.signup("stayer", "old").await;
    let mut stream = server.subscribe(&jwt).await;
    let mut control = server.subscribe(&stayer).await;
    let before = server.insert_ok(&stayer, "before", json!(0)).await;
    assert_eq!(stream.next().await.id, before, "live before the move");
    assert_eq!(control.next().await.id, before);
    let update =
        json!({"admin_token": crate::support::ADMIN_TOKEN, "username": "mover", "tenant_name": "new"});
    assert_eq!(server.post("/update_user", &update).await.0, StatusCode::OK);
    assert!(stream.ends_within(Duration::from_secs(10)).await);
    // The JWT issued in the old tenant is refused; the other user's stream lives on.
    assert_eq!(
        server.insert(&jwt, "e", json!(1)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let after = server.insert_ok(&stayer, "after", json!(1)).await;
    assert_eq!(control.next().await.id, after);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_catches_up_from_the_store() {
    // A live buffer of 4 events makes any burst overflow it, so the stream must recover from LMDB.
    let dir = std::sync::Arc::new(tempfile::TempDir::new().unwrap());
    // 1,250 inserts by one user at once: past `--user_insert_rate`'s burst, off here.
    let flags = ["--live_buffer", "4", "--user_insert_rate", "0"];
    let server = TestServer::start_logging(dir, &flags, "info,broker::subscribe=debug").await;
    let jwt = server.signup("slow", "t").await;
    let mut slow = server.subscribe(&jwt).await;
    // 1,250 events cross the 500-event catch-up page more than twice, and one in a hundred
    // carries ~300 KiB, so pages also end at their 1 MiB bound.
    let data = |i: usize| match i % 100 {
        0 => json!({"i": i, "pad": "x".repeat(300 * 1024)}),
        _ => json!({"i": i}),
    };
    let mut sent = std::collections::BTreeMap::new();
    for chunk in (0..1250).collect::<Vec<_>>().chunks(250) {
        let inserts = chunk.iter().map(|&i| {
            let (server, jwt, data) = (&server, &jwt, data(i));
            async move { (server.insert_ok(jwt, "burst", data.clone()).await, data) }
        });
        sent.extend(futures_util::future::join_all(inserts).await);
    }
    let received = slow.take(1250).await;
    let ids: Vec<u64> = received.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        sent.keys().copied().collect::<Vec<_>>(),
        "in order, no gap, no duplicate"
    );
    for event in &received {
        assert!(
            event.data == sent[&event.id],
            "seq {} holds what was inserted",
            event.id
        );
    }
    slow.expect_quiet(Duration::from_millis(200)).await;
    // A resume from the start reads them all from the store alone, page by page: no live frame can
    // fill in for a page that ended early at its byte bound.
    let resumed = server.subscribe_from(&jwt, Some(0)).await.take(1250).await;
    assert!(
        resumed.iter().map(|e| e.id).eq(ids.iter().copied()),
        "the resume pages through every event in order"
    );
    // The catch-up path ran (log lines are written by a thread of their own: wait for it).
    server
        .wait_for_log("sse subscriber lagged; catching up from the store", 1)
        .await;
}

#[tokio::test]
async fn event_names_starting_with_broker_dot_are_reserved() {
    let server = TestServer::start().await;
    let jwt = server.signup("reserver", "t").await;
    let (status, body) = server.insert(&jwt, "broker.horizon", json!(1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("reserved"), "{body}");
    let admin = server
        .http
        .post(server.endpoint("/admin/insert"))
        .header("x-admin-token", crate::support::ADMIN_TOKEN)
        .json(&json!({"tenant_name": "t", "event": "broker.presence", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::BAD_REQUEST);
    // Nothing was stored: the first accepted insert takes id 1; names merely containing it pass.
    assert_eq!(server.insert_ok(&jwt, "my.broker.news", json!(2)).await, 1);
}
