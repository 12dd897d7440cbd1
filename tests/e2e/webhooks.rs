//! Webhooks against a real receiver that verifies Broker's signatures with PyPI's
//! `standardwebhooks`: delivery in commit order of the events a filter selects, retries and the
//! pause, kill -9 mid-delivery, what the admin API refuses, and a cluster where one node delivers
//! and another takes over when it dies.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::nats::NatsCluster;
use crate::support::webhooks::{Receiver, SECRET, seqs};
use crate::support::{ADMIN_TOKEN, TestServer};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn matching_events_arrive_in_commit_order_signed_the_standard_way() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(SECRET).await;
    let ann = server.signup("ann", "shop").await;
    let other = server.signup("olga", "elsewhere").await;
    let before = server.insert_ok(&ann, "order.created", json!({"n": -1})).await;
    let id = server
        .register_webhook("shop", &receiver.url(), "order.*,refund")
        .await;

    let mut expected = Vec::new();
    for n in 0..30 {
        let name = ["order.created", "chat", "refund", "order.paid.late"][n % 4];
        let seq = server.insert_ok(&ann, name, json!({"n": n})).await;
        if name != "chat" {
            expected.push((seq, name, n));
        }
        server
            .insert_ok(&other, "order.created", json!({"other": n}))
            .await;
    }
    receiver
        .wait_until(WAIT, |seen| seen.len() >= expected.len())
        .await;
    // Nothing more is coming: the chat events and the other tenant's never are.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), expected.len(), "{seen:#?}");
    for (record, (seq, name, n)) in seen.iter().zip(&expected) {
        assert_eq!(record["verified"], true, "{record}");
        assert_eq!(record["seq"], *seq, "{seen:#?}");
        assert_eq!(record["type"], *name);
        assert_eq!(record["data"], json!({"n": n}));
        assert_eq!(record["username"], "ann");
    }
    assert!(
        seqs(&seen).iter().all(|&seq| seq > before),
        "an event from before the registration came"
    );
    let ids: BTreeSet<&str> = seen.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), seen.len(), "each event has its own webhook-id");

    let listed = server.webhook(&id).await;
    assert_eq!(listed["state"], "active", "{listed}");
    assert_eq!(listed["delivered"], expected.len());
    assert_eq!(listed["events"], "order.*,refund");
    let (_, all) = server.webhooks_api("/admin/webhooks", Value::Null).await;
    assert!(
        !all.to_string().contains(&SECRET[6..]),
        "the secret is answered: {all}"
    );
    assert!(!server.logs().contains(&SECRET[6..]), "the secret is logged");

    // A new secret and filter apply to the deliveries after the change.
    let new_secret = "whsec_c2Vjb25kIHNlY3JldCBvZiAyNCBieXRlcyE=";
    receiver.verify_with(new_secret).await;
    let change = json!({"id": id, "events": "chat", "secret": new_secret});
    let (status, changed) = server.webhooks_api("/admin/webhooks/update", change).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["events"], "chat");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.insert_ok(&ann, "refund", json!({"after": "change"})).await;
    let chat = server.insert_ok(&ann, "chat", json!({"after": "change"})).await;
    let seen = receiver
        .wait_until(WAIT, |seen| seen.len() > expected.len())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last = receiver.seen();
    assert_eq!(last.len(), expected.len() + 1, "{seen:#?}");
    assert_eq!(last[expected.len()]["verified"], true, "{last:#?}");
    assert_eq!(last[expected.len()]["seq"], chat);

    // Removed: nothing more.
    let (status, _) = server
        .webhooks_api("/admin/webhooks/delete", json!({"id": id}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.webhook(&id).await, Value::Null);
    server.insert_ok(&ann, "chat", json!({"after": "delete"})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.seen().len(), expected.len() + 1);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_in_order_then_paused_until_resumed() {
    let flags = [
        "--webhook_attempts",
        "4",
        "--webhook_backoff_ms",
        "50",
        "--metrics_port",
        "0",
    ];
    let server = TestServer::start_with(&flags).await;
    let receiver = Receiver::start(SECRET).await;
    receiver.answer_with(503).await;
    let ann = server.signup("ann", "shop").await;
    let id = server.register_webhook("shop", &receiver.url(), "").await;
    let first = server.insert_ok(&ann, "order", json!({"n": 1})).await;
    let second = server.insert_ok(&ann, "order", json!({"n": 2})).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let paused = loop {
        let webhook = server.webhook(&id).await;
        if webhook["state"] == "paused" {
            break webhook;
        }
        assert!(tokio::time::Instant::now() < deadline, "never paused: {webhook}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(paused["failures"], 4, "{paused}");
    assert!(paused["last_error"].as_str().unwrap().contains("503"), "{paused}");
    // Four attempts, all at the first event: the second waits behind it.
    let seen = receiver.seen();
    assert_eq!(seqs(&seen), vec![first; 4], "{seen:#?}");
    assert!(server.logs().contains("webhook paused"), "{}", server.logs());
    // And in the metrics: four failed attempts, one pause, no webhook delivering now.
    let lines = [
        "broker_webhook_attempts_total{outcome=\"failed\"} 4",
        "broker_webhook_pauses_total 1",
        "broker_webhooks_delivering 0",
    ];
    crate::metrics::assert_metrics_lines(&server, &lines).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.seen().len(), 4, "a paused webhook was tried again");

    receiver.answer_with(200).await;
    let (status, resumed) = server
        .webhooks_api("/admin/webhooks/resume", json!({"id": id}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    let seen = receiver
        .wait_until(WAIT, |seen| {
            seen.iter().filter(|r| r["status"] == 200).count() >= 2
        })
        .await;
    assert_eq!(seqs(&receiver.delivered()), vec![first, second], "{seen:#?}");
    // The record counts a delivery once the receiver's answer is back: moments after it saw it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let webhook = server.webhook(&id).await;
        if webhook["delivered"] == 2 {
            assert_eq!(webhook["state"], "active", "{webhook}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never counted: {webhook}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_url_changed_while_retrying_is_used_at_once() {
    // The wait after the first failure (60 to 120 s) is longer than the test waits: the fixed URL
    // must cut it short.
    let server = TestServer::start_with(&["--webhook_backoff_ms", "120000"]).await;
    let broken = Receiver::start(SECRET).await;
    broken.answer_with(500).await;
    let fixed = Receiver::start(SECRET).await;
    let ann = server.signup("ann", "shop").await;
    let id = server.register_webhook("shop", &broken.url(), "").await;
    let seq = server.insert_ok(&ann, "order", json!({"n": 1})).await;
    broken.wait_until(WAIT, |seen| !seen.is_empty()).await;
    let webhook = server.webhook(&id).await;
    assert_eq!(webhook["state"], "retrying", "{webhook}");

    let change = json!({"id": id, "url": fixed.url()});
    let (status, answer) = server.webhooks_api("/admin/webhooks/update", change).await;
    assert_eq!(status, 200, "{answer}");
    let seen = fixed.wait_until(WAIT, |seen| !seen.is_empty()).await;
    assert_eq!(seqs(&fixed.delivered()), vec![seq], "{seen:#?}");
    assert_eq!(broken.seen().len(), 1, "the old URL was tried again");
}

#[tokio::test]
async fn kill_9_mid_delivery_skips_nothing_and_the_webhook_outlives_restarts() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(SECRET).await;
    receiver.delay(10).await;
    let ann = server.signup("ann", "shop").await;
    server.register_webhook("shop", &receiver.url(), "").await;
    let mut acknowledged = Vec::new();
    for n in 0..200 {
        acknowledged.push(server.insert_ok(&ann, "tick", json!({"n": n})).await);
    }
    receiver.wait_until(WAIT, |seen| seen.len() >= 40).await;
    let dir = server.kill();
    let delivered_before = receiver.seen().len();
    assert!(
        delivered_before < 200,
        "the kill came after every delivery; slow the receiver down"
    );

    let server = TestServer::start_in(dir, &[]).await;
    let ann = server.login("ann").await;
    for n in 200..210 {
        acknowledged.push(server.insert_ok(&ann, "tick", json!({"n": n})).await);
    }
    receiver
        .wait_until(WAIT * 2, |seen| {
            seen.iter()
                .filter_map(|r| r["seq"].as_u64())
                .collect::<BTreeSet<_>>()
                .len()
                >= 210
        })
        .await;
    let seen = receiver.delivered();
    let distinct: BTreeSet<u64> = seqs(&seen).into_iter().collect();
    assert_eq!(
        distinct,
        acknowledged.iter().copied().collect(),
        "an acknowledged event was skipped"
    );
    // In order, except that the events after the last saved cursor came twice, in order again.
    let order = seqs(&seen);
    let restarts = order.windows(2).filter(|pair| pair[1] <= pair[0]).count();
    assert!(restarts <= 1, "out of order beyond the one restart: {order:?}");
    let repeated = order.len() - distinct.len();
    assert!(repeated <= 200, "{repeated} repeated");
}

#[tokio::test]
async fn the_admin_api_refuses_bad_registrations_with_json_errors() {
    let server = TestServer::start_with(&["--webhook_hosts", "hooks.example.com,127.0.0.1"]).await;
    let good = |changes: Value| {
        let mut body = json!({"tenant": "shop", "url": "http://127.0.0.1:9/hook", "secret": SECRET});
        for (key, value) in changes.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let refusals = [
        (good(json!({"url": "ftp://127.0.0.1/x"})), "http"),
        (
            good(json!({"url": "http://169.254.169.254/latest"})),
            "--webhook_hosts",
        ),
        (good(json!({"url": "not a url"})), "url"),
        (
            good(json!({"secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})),
            "whsec_",
        ),
        (good(json!({"secret": "whsec_c2hvcnQ="})), "24 to 64 bytes"),
        (good(json!({"events": "a,,b"})), "empty"),
        (good(json!({"tenant": ""})), "tenant"),
        (good(json!({"extra": 1})), "unknown field"),
    ];
    for (body, says) in refusals {
        let (status, answer) = server.webhooks_api("/admin/webhooks", body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{body} → {error}");
        assert!(
            !error.contains("MfKQ9r8G") && !error.contains("c2hvcnQ"),
            "{error}"
        );
    }
    for path in [
        "/admin/webhooks/update",
        "/admin/webhooks/delete",
        "/admin/webhooks/resume",
    ] {
        // An id of another shape, a key too long for the store included, names no webhook.
        for id in ["nope".to_owned(), "f".repeat(32), "x".repeat(100_000)] {
            let (status, answer) = server.webhooks_api(path, json!({"id": id})).await;
            assert_eq!(status, 404, "{path} → {answer}");
            assert!(answer["error"].is_string());
        }
    }
    let response = server
        .http
        .get(server.endpoint("/admin/webhooks"))
        .header("x-admin-token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    for _ in 0..16 {
        server
            .register_webhook("shop", "http://127.0.0.1:9/hook", "")
            .await;
    }
    let (status, answer) = server.webhooks_api("/admin/webhooks", good(json!({}))).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("16"), "{answer}");
    server
        .register_webhook("other", "https://hooks.example.com/in", "")
        .await;
    let (_, listed) = server
        .webhooks_api("/admin/webhooks?tenant=shop", Value::Null)
        .await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 16);

    // Deleting the tenant deletes its webhooks.
    let body = json!({"admin_token": ADMIN_TOKEN, "tenant_name": "shop"});
    let (status, answer) = server.post("/delete_tenant", &body).await;
    assert_eq!(status, 200, "{answer}");
    let (_, listed) = server.webhooks_api("/admin/webhooks", Value::Null).await;
    let tenants: Vec<&str> = listed["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, vec!["other"]);
}

#[tokio::test]
async fn in_a_cluster_one_node_delivers_and_another_takes_over_when_it_dies() {
    let nats = NatsCluster::start().await;
    let mut nodes = vec![
        crate::cluster::node(&nats).await,
        crate::cluster::node(&nats).await,
    ];
    let receiver = Receiver::start(SECRET).await;
    let ann = nodes[0].signup("ann", "shop").await;
    nodes[0].register_webhook("shop", &receiver.url(), "").await;
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        acknowledged.push(nodes[n % 2].insert_ok(&ann, "tick", json!({"n": n})).await);
    }
    let seen = receiver.wait_until(WAIT, |seen| seen.len() >= 20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // One node at a time: each event once, in commit order.
    assert_eq!(seqs(&receiver.delivered()), acknowledged, "{seen:#?}");
    let holders: Vec<usize> = (0..2)
        .filter(|&i| nodes[i].logs().contains("this node delivers the webhook"))
        .collect();
    assert_eq!(holders.len(), 1, "both nodes took the lease");

    let survivor = nodes.remove(1 - holders[0]);
    let holder = nodes.remove(0);
    let killed_at = tokio::time::Instant::now();
    holder.kill();
    for n in 20..30 {
        acknowledged.push(survivor.insert_ok(&ann, "tick", json!({"n": n})).await);
    }
    receiver
        .wait_until(WAIT, |seen| {
            seen.iter()
                .filter_map(|r| r["seq"].as_u64())
                .collect::<BTreeSet<_>>()
                .len()
                >= 30
        })
        .await;
    let took = killed_at.elapsed();
    // The README's promise: the lease (10 s) runs out, then the survivor looks within a second.
    assert!(took < Duration::from_secs(20), "took over after {took:?}");
    assert!(survivor.logs().contains("this node delivers the webhook"));
    let distinct: BTreeSet<u64> = seqs(&receiver.delivered()).into_iter().collect();
    assert_eq!(distinct, acknowledged.iter().copied().collect());
}
