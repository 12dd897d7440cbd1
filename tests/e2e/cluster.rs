//! Cluster mode: several `broker` processes on a real three-server NATS JetStream cluster act as one
//! service. Events, users, credentials and resume points work across nodes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use broker::cluster::Cluster;
use broker::cluster::events::JetStreamLog;
use broker::config::Config;
use broker::fanout::Fanout;
use broker::model::Event;
use clap::Parser;
use reqwest::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::nats::NatsCluster;
use crate::support::sse::SseEvent;
use crate::support::{ADMIN_TOKEN, PASSWORD, TestServer};

/// A Broker node on `nats`, replicating what it creates to all three servers.
pub async fn node(nats: &NatsCluster) -> TestServer {
    // The fault tests' writers insert as one user as fast as they can: `--user_insert_rate` off.
    node_with(nats, &["--user_insert_rate", "0"]).await
}

/// A Broker node on `nats` (three replicas) with `flags` besides.
pub async fn node_with(nats: &NatsCluster, flags: &[&str]) -> TestServer {
    let urls = nats.urls();
    let flags = [&["--nats", urls.as_str(), "--nats_replicas", "3"][..], flags].concat();
    TestServer::start_with(&flags).await
}

/// Two nodes on `nats` whose tenant `forms` has the `versioned` guest.
pub async fn versioned_nodes(nats: &NatsCluster) -> Vec<TestServer> {
    let flags = ["--nats", &nats.urls(), "--nats_replicas", "3"];
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let dir = crate::support::data_dir_with(&[("forms.wasm", "versioned")]);
        nodes.push(TestServer::start_in(dir, &flags).await);
    }
    nodes
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(|event| event.id).collect()
}

#[tokio::test]
async fn inserts_on_any_node_reach_every_node_once_in_one_order() {
    let nats = NatsCluster::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let jwt = a.signup("ann", "team").await;
    // A JWT issued on one node works on the other.
    let mut on_a = a.subscribe(&jwt).await;
    let mut on_b = b.subscribe(&jwt).await;

    let inserts = (0..20).map(|i| {
        let (server, jwt) = (if i % 2 == 0 { &a } else { &b }, jwt.clone());
        async move { server.insert_ok(&jwt, &format!("e{}", i % 3), json!(i)).await }
    });
    let acknowledged: BTreeSet<u64> = futures_util::future::join_all(inserts)
        .await
        .into_iter()
        .collect();
    assert_eq!(acknowledged.len(), 20, "every insert got its own id");

    let seen_a = on_a.take(20).await;
    let seen_b = on_b.take(20).await;
    assert_eq!(
        seen_a, seen_b,
        "both nodes deliver the same events, with the same ids, in one order"
    );
    assert!(
        ids(&seen_a).windows(2).all(|w| w[0] < w[1]),
        "ids strictly increase: {:?}",
        ids(&seen_a)
    );
    assert_eq!(ids(&seen_a).into_iter().collect::<BTreeSet<_>>(), acknowledged);
    on_a.expect_quiet(Duration::from_millis(300)).await;
    on_b.expect_quiet(Duration::from_millis(300)).await;

    // A new stream on either node replays the newest of each name first.
    let replay = b.subscribe(&jwt).await.take(3).await;
    let newest: Vec<u64> = ["e0", "e1", "e2"]
        .iter()
        .map(|name| {
            seen_a
                .iter()
                .filter(|e| e.event == *name)
                .map(|e| e.id)
                .max()
                .unwrap()
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(ids(&replay), newest);
}

#[tokio::test]
async fn names_with_subject_syntax_never_reach_another_tenant() {
    let nats = NatsCluster::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let tenants = ["a", "a.b", "*", ">", "a b", "ünï.*"];
    let mut streams = Vec::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let jwt = a.signup(&format!("user{i}"), tenant).await;
        streams.push((jwt.clone(), b.subscribe(&jwt).await));
    }
    for (i, (jwt, _)) in streams.iter().enumerate() {
        a.insert_ok(jwt, "x.>", json!({"tenant": i})).await;
    }
    for (i, (_, stream)) in streams.iter_mut().enumerate() {
        let event = stream.next().await;
        assert_eq!(
            (event.event.as_str(), event.data.clone()),
            ("x.>", json!({"tenant": i}))
        );
        stream.expect_quiet(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_username_is_unique_even_when_two_nodes_create_it_at_once() {
    let nats = NatsCluster::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    for round in 0..3 {
        let name = format!("race{round}");
        // Six creates of one name, three on each node, at once.
        let creates = (0..6).map(|i| {
            let (server, name) = (if i % 2 == 0 { &a } else { &b }, name.clone());
            let fields = json!({"username": name, "tenant_name": format!("tenant{i}"), "password": format!("password {i}")});
            async move { server.create_user_with(fields).await }
        });
        let answers = futures_util::future::join_all(creates).await;
        let winners: Vec<usize> = (0..6).filter(|&i| answers[i].0 == StatusCode::OK).collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        for (status, body) in answers.iter().filter(|(status, _)| *status != StatusCode::OK) {
            assert_eq!(
                (*status, body.clone()),
                (
                    StatusCode::BAD_REQUEST,
                    json!({"error": "username already taken"})
                ),
                "round {round}: a loser is told why"
            );
        }
        // Both nodes log the winner in with its password, and nobody else's.
        let winner = winners[0];
        for server in [&a, &b] {
            let login = |password: String| {
                let body = json!({"username": name, "password": password});
                async move { server.post("/login", &body).await }
            };
            assert_eq!(
                login(format!("password {winner}")).await.0,
                StatusCode::OK,
                "round {round}"
            );
            let loser = (winner + 1) % 6;
            assert_eq!(
                login(format!("password {loser}")).await.0,
                StatusCode::UNAUTHORIZED,
                "round {round}"
            );
        }
    }
}

#[tokio::test]
async fn a_revoke_on_one_node_ends_the_users_streams_on_every_node_within_two_seconds() {
    let nats = NatsCluster::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let jwt = a.signup("rita", "t").await;
    let other = a.signup("sam", "t").await;
    let mut on_a = a.subscribe(&jwt).await;
    let mut on_b = b.subscribe(&jwt).await;
    let mut control = a.subscribe(&other).await;
    // Every stream is live before the revoke: an end seen later is the revoke's doing.
    let before = b.insert_ok(&other, "before", json!(0)).await;
    for stream in [&mut on_a, &mut on_b, &mut control] {
        assert_eq!(stream.next().await.id, before);
    }
    let revoke = json!({"admin_token": ADMIN_TOKEN, "username": "rita"});
    assert_eq!(b.post("/revoke_user", &revoke).await.0, StatusCode::OK);
    assert!(
        on_a.ends_within(Duration::from_secs(2)).await,
        "the stream on the other node ended"
    );
    assert!(on_b.ends_within(Duration::from_secs(2)).await);
    assert_eq!(a.insert(&jwt, "e", json!(1)).await.0, StatusCode::UNAUTHORIZED);
    let after = a.insert_ok(&other, "after", json!(1)).await;
    assert_eq!(control.next().await.id, after, "another user's stream lives on");
}

#[tokio::test]
async fn a_resume_on_another_node_loses_and_repeats_nothing() {
    let nats = NatsCluster::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let jwt = a.signup("res", "t").await;
    let mut first = a.subscribe(&jwt).await;
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(a.insert_ok(&jwt, "tick", json!(i)).await);
    }
    let seen = first.take(3).await;
    drop(first);
    let mut resumed = b.subscribe_from(&jwt, Some(seen[2].id)).await;
    let rest = resumed.take(3).await;
    assert_eq!(ids(&rest), sent[3..]);
    let live = b.insert_ok(&jwt, "tick", json!(6)).await;
    assert_eq!(resumed.next().await.id, live);
}

#[tokio::test]
async fn a_reset_code_works_once_cluster_wide_and_the_biscuit_key_is_shared() {
    let nats = NatsCluster::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    a.signup("reset", "t").await;
    let (status, body) = a
        .post(
            "/create_totp",
            &json!({"admin_token": ADMIN_TOKEN, "username": "reset"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reset = |password: &str| json!({"username": "reset", "totp": body["totp"], "password": password});
    let (first, second) = (reset("new password one 1"), reset("new password two 2"));
    let (on_a, on_b) = tokio::join!(
        a.post("/password_reset", &first),
        b.post("/password_reset", &second)
    );
    let winners = [on_a.0, on_b.0].iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(winners, 1, "{on_a:?} {on_b:?}");
    let (won, lost) = if on_a.0 == StatusCode::OK {
        ("new password one 1", &on_b)
    } else {
        ("new password two 2", &on_a)
    };
    assert_eq!(
        lost,
        &(
            StatusCode::UNAUTHORIZED,
            json!({"error": "totp is invalid or expired"})
        ),
        "the loser is told its code is used"
    );
    let other = if won == "new password one 1" {
        "new password two 2"
    } else {
        "new password one 1"
    };
    for server in [&a, &b] {
        let login = |password: &str| {
            let body = json!({"username": "reset", "password": password});
            async move { server.post("/login", &body).await }
        };
        assert_eq!(
            login(won).await.0,
            StatusCode::OK,
            "the winner's password is the one stored"
        );
        assert_eq!(login(other).await.0, StatusCode::UNAUTHORIZED);
    }

    let verify = |server: &TestServer| {
        let request = server
            .http
            .get(server.endpoint("/verify"))
            .basic_auth("other", Some(PASSWORD));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let key = response.json::<serde_json::Value>().await.unwrap()["key"].clone();
            assert_eq!(
                key.as_array().map(Vec::len),
                Some(32),
                "an ed25519 public key: {key}"
            );
            key
        }
    };
    assert_eq!(a.create_user("other", "t").await.0, StatusCode::OK);
    assert_eq!(
        verify(&a).await,
        verify(&b).await,
        "one biscuit root key for the cluster"
    );
}

#[tokio::test]
async fn a_publish_retried_after_a_lost_acknowledgement_is_stored_once() {
    let nats = NatsCluster::start().await;
    let config = Config::parse_from(["broker", "--nats", &nats.urls(), "--nats_replicas", "3"]);
    let cluster = Arc::new(Cluster::connect(&config, &nats.urls()).await.unwrap());
    let shutdown = CancellationToken::new();
    let log = JetStreamLog::start(cluster, Arc::new(Fanout::new(8)), shutdown.clone())
        .await
        .unwrap();
    let event = Event::from_new(
        broker::model::NewEvent {
            tenant_name: "dedup".into(),
            username: "u".into(),
            event: "e".into(),
            data: json!(1),
            timestamp: 0,
            reads: Vec::new(),
            idempotency_key: None,
            tenant_max_bytes: 0,
        },
        0,
    );
    // The same event published twice, as a retry after a lost acknowledgement does.
    let first = log.publish(&event).await.unwrap();
    let again = log.publish(&event).await.unwrap();
    assert_eq!(first, again);
    use broker::event_log::EventLog;
    let stored = log.events_after("dedup", 0, 100, 1 << 20).await.unwrap();
    assert_eq!(stored.events.len(), 1, "{:?}", stored.events);
    shutdown.cancel();
}

/// The README's bound on compare-and-set: a conditional publish that keeps losing to other writers
/// of what it checks gives up after 40 attempts with "unavailable" (a 503 with Retry-After), rather
/// than retrying forever. Here every attempt is overtaken: the writer the condition is read for
/// publishes on the subject itself before its own conditional publish, for one key and for the
/// whole stream.
#[tokio::test]
async fn a_compare_and_set_that_keeps_losing_gives_up_after_40_attempts() {
    use broker::storage::StorageError;
    use std::sync::atomic::{AtomicU32, Ordering};

    let nats = NatsCluster::start().await;
    let config = Config::parse_from(["broker", "--nats", &nats.urls(), "--nats_replicas", "3"]);
    let cluster = Arc::new(Cluster::connect(&config, &nats.urls()).await.unwrap());
    let subject = cluster.name_tokens.event_subject("contended", "doc");
    let attempts = AtomicU32::new(0);
    // The other writer's acknowledgements wait longer than Broker's 3 s: on a machine busy with
    // other tests, a timed-out publish would fail the test without saying anything about Broker.
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .build(cluster.client.clone());
    let (attempts, subject, jetstream) = (&attempts, &subject, &jetstream);
    // Publishes on the subject (another writer, winning), then offers its own payload.
    let overtake = move || async move {
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        let other = jetstream.publish(subject.clone(), format!("other {n}").into());
        other.await.unwrap().await.unwrap();
        Ok(Some((bytes::Bytes::from("mine"), ())))
    };
    let one_key = cluster
        .publish_if_subject_unchanged(&cluster.events, subject, "key-cas", |_| overtake())
        .await;
    assert!(
        matches!(&one_key, Err(StorageError::Unavailable(why)) if why.contains("after 40 attempts")),
        "{one_key:?}"
    );
    assert_eq!(attempts.swap(0, Ordering::SeqCst), 40);
    let whole_stream = cluster
        .publish_if_stream_unchanged(&cluster.events, subject, "stream-cas", overtake)
        .await;
    assert!(
        matches!(&whole_stream, Err(StorageError::Unavailable(why)) if why.contains("after 40 attempts")),
        "{whole_stream:?}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 40);
    // Nothing of the losing writer was stored: every message on the subject is the other writer's.
    let last = cluster
        .last_message(&cluster.events, subject)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&last.payload[..], b"other 39");
}

#[tokio::test]
async fn a_guest_read_holds_at_commit_across_nodes() {
    let nats = NatsCluster::start().await;
    let nodes = versioned_nodes(&nats).await;
    let jwt = nodes[0].signup("editor", "forms").await;
    nodes[0].insert_ok(&jwt, "doc", json!({"version": 1})).await;

    // Twenty clients on both nodes send version 2 at once: JetStream's per-subject check lets one win.
    let urls = [nodes[0].endpoint(""), nodes[1].endpoint("")];
    let bodies = (0..20).map(|i| json!({"event": "doc", "data": {"version": 2, "by": i}}));
    let answers = crate::support::insert_all_at_once(&urls, &jwt, bodies).await;
    let won = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(won, 1, "{answers:?}");
    for (status, body) in &answers {
        assert!(
            [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::CONFLICT].contains(status),
            "{status} {body}"
        );
    }
    nodes[1].insert_ok(&jwt, "doc", json!({"version": 3})).await;
}

/// Compare-and-set is per name: tenant A's versioned inserts on one node all commit while tenant B
/// floods the other node. No 503 from contention with another tenant's writes, and no refusal by
/// the guest on a read that missed A's own acknowledged insert (reads come from the leader).
#[tokio::test]
async fn versioned_inserts_all_commit_while_another_tenant_floods_the_cluster() {
    let nats = NatsCluster::start().await;
    let nodes = versioned_nodes(&nats).await;
    let ann = nodes[0].signup("ann", "forms").await;
    let bob = nodes[1].signup("bob", "flood").await;

    let stop = CancellationToken::new();
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let (url, jwt, stop) = (nodes[1].endpoint("/insert"), bob.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut sent = 0u32;
                while !stop.is_cancelled() {
                    let body = json!({"event": format!("noise.{}", sent % 7), "data": sent});
                    let response = http
                        .post(&url)
                        .bearer_auth(&jwt)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        response.status(),
                        StatusCode::OK,
                        "{}",
                        response.text().await.unwrap()
                    );
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    // The flood is under way before A starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for version in 1..=40 {
        let (status, body) = nodes[0].insert(&ann, "doc", json!({"version": version})).await;
        assert_eq!(status, StatusCode::OK, "version {version}: {body}");
    }
    stop.cancel();
    let mut flooded = 0;
    for flooder in flooders {
        flooded += flooder.await.unwrap();
    }
    assert!(flooded > 40, "tenant B inserted only {flooded} events meanwhile");
}

/// Broker refuses a nats-server older than the guarantees it relies on (one winner among racing
/// conditional publishes, fsync before the acknowledgement), saying which version it found and
/// which it needs, rather than running on a server that would let it double or lose writes.
#[tokio::test]
async fn a_nats_server_older_than_2_11_is_refused_at_start_with_the_reason() {
    let old = crate::support::nats::nats_server_binary("2.10.26");
    let dir = tempfile::TempDir::new().unwrap();
    let port = crate::support::pebble::free_port();
    let mut server = std::process::Command::new(old)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.path().join("store"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting nats-server 2.10.26");
    let url = format!("nats://127.0.0.1:{port}");
    let (status, log) = crate::support::start_refused(dir.path(), &["--nats", &url]).await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(!status.success(), "broker ran on nats-server 2.10.26: {log}");
    assert!(
        log.contains("nats-server 2.10.26 is too old") && log.contains("needs 2.11.0 or newer"),
        "the refusal names the version found and the one needed: {log}"
    );
    assert!(log.contains("#4320"), "the refusal says why: {log}");

    // The same broker flags on a current server start (the control).
    let cluster = NatsCluster::start().await;
    let node = TestServer::start_with(&["--nats", &cluster.urls()]).await;
    node.wait_for_log("NATS server version", 1).await;
    assert!(
        node.logs().contains(crate::support::nats::CURRENT),
        "{}",
        node.logs()
    );
}

/// An event larger than the NATS server takes in one message is refused 413 at once (not retried
/// for 10 s and answered 503), naming the limit, and nothing is stored.
#[tokio::test]
async fn an_event_over_the_servers_max_payload_is_413_and_stores_nothing() {
    let nats = NatsCluster::start().await;
    let server = node(&nats).await;
    let jwt = server.signup("big", "t").await;
    // Under the 1 MiB body bound, over NATS's default max_payload (1 MiB) once stored with its envelope.
    let (status, body) = server.insert(&jwt, "big", json!("x".repeat(1_048_000))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        body["error"],
        "the event is larger than the 1047552 bytes the event log takes; send less data"
    );
    let seq = server.insert_ok(&jwt, "small", json!("x".repeat(1000))).await;
    let mut stream = server.subscribe_from(&jwt, Some(0)).await;
    assert_eq!(stream.next().await.id, seq);
    stream.expect_quiet(Duration::from_millis(200)).await;
}

/// The event stream has the size `--nats_max_mb` gives it and refuses new events when full: 507,
/// every acknowledged event kept (nothing old is discarded to make room).
#[tokio::test]
async fn a_full_event_stream_is_507_and_keeps_every_acknowledged_event() {
    let nats = NatsCluster::start().await;
    let server = TestServer::start_with(&[
        "--nats",
        &nats.urls(),
        "--nats_replicas",
        "3",
        "--nats_max_mb",
        "1",
    ])
    .await;
    let jwt = server.signup("filler", "t").await;
    let mut acknowledged = Vec::new();
    let full = loop {
        let (status, body) = server.insert(&jwt, "chunk", json!("x".repeat(200_000))).await;
        match status {
            StatusCode::OK => acknowledged.push(body["seq"].as_u64().unwrap()),
            other => break (other, body),
        }
        assert!(
            acknowledged.len() < 10,
            "1 MiB took {} inserts of 200 kB",
            acknowledged.len()
        );
    };
    assert_eq!(full.0, StatusCode::INSUFFICIENT_STORAGE, "{}", full.1);
    assert_eq!(full.1["error"], "the database is full");
    assert!(!acknowledged.is_empty());
    let mut stream = server.subscribe_from(&jwt, Some(0)).await;
    let stored: Vec<u64> = stream
        .take(acknowledged.len())
        .await
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stored, acknowledged);
    stream.expect_quiet(Duration::from_millis(200)).await;
}

/// At start Broker reports a stream with fewer replicas than asked (moving data is the operator's
/// call) and sets the size limit it is asked for.
#[tokio::test]
async fn an_existing_stream_with_fewer_replicas_is_reported_and_its_size_limit_set() {
    let nats = NatsCluster::start().await;
    let first = TestServer::start_with(&["--nats", &nats.urls(), "--nats_replicas", "1"]).await;
    first.wait_for_log("created JetStream stream", 1).await;
    let second = TestServer::start_with(&[
        "--nats",
        &nats.urls(),
        "--nats_replicas",
        "3",
        "--nats_max_mb",
        "64",
    ])
    .await;
    second
        .wait_for_log("fewer replicas than --nats_replicas asks for", 1)
        .await;
    second
        .wait_for_log("set the JetStream stream's size limit", 1)
        .await;
    assert!(second.logs().contains("max_bytes=67108864"), "{}", second.logs());
    assert!(!first.logs().contains("fewer replicas"), "{}", first.logs());
}

/// Given three servers and no `--nats_replicas`, Broker replicates what it creates to all three.
#[tokio::test]
async fn three_servers_and_no_replica_flag_make_three_replicas() {
    let nats = NatsCluster::start().await;
    let server = TestServer::start_with(&["--nats", &nats.urls()]).await;
    server.wait_for_log("created JetStream stream", 3).await;
    let logs = server.logs();
    let created: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("created JetStream stream"))
        .collect();
    assert_eq!(created.len(), 3, "{logs}");
    assert!(
        created.iter().all(|line| line.contains("replicas=3")),
        "{created:?}"
    );
}

/// The value of `series` (name and labels) in a scrape of `server`'s `/metrics`, 0 if absent.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let scrape = crate::metrics::scrape(server).await;
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn replays_and_catch_ups_are_batch_reads_and_a_tenant_of_over_1024_names_replays_them_all() {
    let nats = NatsCluster::start().await;
    let a = node_with(&nats, &["--user_insert_rate", "0", "--metrics_port", "0"]).await;
    const BATCH: &str = "broker_cluster_reads_total{kind=\"batch\"}";
    const CONSUMER: &str = "broker_cluster_reads_total{kind=\"consumer\"}";

    // A few names: the replay and a resume are each one batch direct get, no consumer.
    let jwt = a.signup("few", "t").await;
    let mut sent = Vec::new();
    for round in 0..3 {
        for name in ["a", "b", "c"] {
            sent.push(a.insert_ok(&jwt, name, json!(round)).await);
        }
    }
    let mut replay = a.subscribe(&jwt).await;
    let newest = replay.take(3).await;
    assert_eq!(ids(&newest), sent[6..]);
    assert!(newest.iter().all(|event| event.data == json!(2)));
    let mut resumed = a.subscribe_from(&jwt, Some(sent[1])).await;
    assert_eq!(ids(&resumed.take(7).await), sent[2..]);
    assert!(metric(&a, BATCH).await >= 2.0);
    assert_eq!(metric(&a, CONSUMER).await, 0.0);

    // More names than one batch answers for: the replay goes through a consumer and has them all.
    let jwt = a.signup("many", "u").await;
    let names: Vec<String> = (0..1030).map(|k| format!("n{k}")).collect();
    let mut sent = Vec::new();
    for chunk in names.chunks(16) {
        let inserts = chunk.iter().map(|name| a.insert_ok(&jwt, name, json!(1)));
        sent.extend(futures_util::future::join_all(inserts).await);
    }
    sent.sort_unstable();
    let mut replay = a.subscribe(&jwt).await;
    assert_eq!(ids(&replay.take(names.len()).await), sent);
    assert_eq!(metric(&a, CONSUMER).await, 1.0);

    // A resume from the start reads them all again: pages of 500, each more than one batch of 256.
    let mut resumed = a.subscribe_from(&jwt, Some(0)).await;
    assert_eq!(ids(&resumed.take(names.len()).await), sent);
    assert_eq!(metric(&a, CONSUMER).await, 1.0);
}

/// Takes the name-tokens stamp off the event stream, as a stream an older Broker made is.
async fn unstamp(jetstream: &async_nats::jetstream::Context) {
    let mut stream = jetstream.get_stream("BROKER_EVENTS").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    assert!(
        config.metadata.remove("broker.name_tokens").is_some(),
        "{config:?}"
    );
    jetstream.update_stream(&config).await.unwrap();
}

async fn stamp(jetstream: &async_nats::jetstream::Context) -> Option<String> {
    let mut stream = jetstream.get_stream("BROKER_EVENTS").await.unwrap();
    let info = stream.info().await.unwrap();
    info.config.metadata.get("broker.name_tokens").cloned()
}

/// The (name, data) of each event of one page of `filter`, newest first.
async fn named_page(server: &TestServer, jwt: &str, filter: &str) -> Vec<(String, serde_json::Value)> {
    let response = (server.http.get(server.endpoint("/events")))
        .query(&[("events", filter)])
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    let events = body["events"].as_array().unwrap();
    events
        .iter()
        .map(|e| (e["event"].as_str().unwrap().to_owned(), e["data"].clone()))
        .collect()
}

/// A stream Broker makes holds an event name one subject token per dot-separated part (so that a
/// prefix filter is a subject filter) and says so in its metadata. A stream an older Broker made,
/// without that stamp, is stamped at start if it holds no dotted name as one token; if it does, it
/// keeps that form, and that name's old and new events are read together.
#[tokio::test]
async fn the_event_streams_name_form_is_stamped_and_an_older_form_is_kept() {
    use broker::cluster::subjects::token;
    let nats = NatsCluster::start().await;
    let client = async_nats::connect(nats.url(0)).await.unwrap();
    // Acknowledgements wait as long as Broker's own on a busy machine.
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .build(client);
    let server = node(&nats).await;
    let jwt = server.signup("former", "forms").await;
    let first = server.insert_ok(&jwt, "a.b", json!({"n": 1})).await;
    let stream = jetstream.get_stream("BROKER_EVENTS").await.unwrap();
    let tenant = token("forms");
    let per_part = format!("broker.ev.{tenant}.{}.{}", token("a"), token("b"));
    let whole = format!("broker.ev.{tenant}.{}", token("a.b"));
    assert_eq!(stamp(&jetstream).await.as_deref(), Some("per-part"));
    let message = stream.get_raw_message(first).await.unwrap();
    assert_eq!(message.subject.as_str(), per_part);

    // No dotted name in one token: the two forms agree, and the stream is stamped.
    server.terminate().await;
    unstamp(&jetstream).await;
    let server = node(&nats).await;
    server
        .wait_for_log("now holds names one subject token per part", 1)
        .await;
    assert_eq!(stamp(&jetstream).await.as_deref(), Some("per-part"));

    // `a.b` in one token, as an older Broker published it.
    server.terminate().await;
    let moved = jetstream
        .publish(whole.clone(), message.payload.clone())
        .await
        .unwrap();
    let moved = moved.await.unwrap().sequence;
    stream.delete_message(first).await.unwrap();
    unstamp(&jetstream).await;
    let server = node(&nats).await;
    server
        .wait_for_log("holds event names with dots as one subject token", 1)
        .await;
    assert_eq!(stamp(&jetstream).await, None);
    let jwt = server.login("former").await;
    let second = server.insert_ok(&jwt, "a.b", json!({"n": 2})).await;
    assert!(second > moved);
    let message = stream.get_raw_message(second).await.unwrap();
    assert_eq!(message.subject.as_str(), whole);
    let both = vec![
        ("a.b".to_owned(), json!({"n": 2})),
        ("a.b".to_owned(), json!({"n": 1})),
    ];
    assert_eq!(named_page(&server, &jwt, "a.b").await, both);
    assert_eq!(named_page(&server, &jwt, "a.*").await, both);
    let mut live = server.subscribe(&jwt).await;
    assert_eq!(
        live.take(1).await[0].id,
        second,
        "the replay holds the newest a.b"
    );
}
