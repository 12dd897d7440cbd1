//! Limits per user, per tenant and per client address (`--user_insert_rate`, `--tenant_insert_rate`,
//! `--login_rate`, `--user_streams`, `--tenant_streams`): past one, 429 with `Retry-After` and a JSON
//! error naming it, nothing stored; the others are untouched; an admin override gives a tenant more
//! without a restart, survives one, and reaches every node of a cluster.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::{Value, json};

use crate::support::nats::NatsCluster;
use crate::support::{ADMIN_TOKEN, PASSWORD, TestServer, status_and_json};

/// An insert's status, `Retry-After` (seconds) and body.
async fn insert(server: &TestServer, jwt: &str, n: u64) -> (StatusCode, Option<u64>, Value) {
    let response = (server.http.post(server.endpoint("/insert")))
        .bearer_auth(jwt)
        .json(&json!({"event": "counter", "data": n}))
        .send()
        .await
        .unwrap();
    answer(response).await
}

async fn answer(response: reqwest::Response) -> (StatusCode, Option<u64>, Value) {
    let retry = response.headers().get(RETRY_AFTER).map(|value| {
        let text = value.to_str().unwrap();
        text.parse().unwrap()
    });
    let (status, body) = status_and_json(response).await;
    (status, retry, body)
}

/// Asserts a 429 that names `limit` and says when to come back.
fn assert_limited(answer: &(StatusCode, Option<u64>, Value), limit: &str) {
    let (status, retry, body) = answer;
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["limit"], limit, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(limit), "{message}");
    assert!(
        retry.is_some_and(|seconds| seconds >= 1),
        "Retry-After: {retry:?}"
    );
}

/// Every stored payload of the caller's tenant, oldest first.
async fn stored(server: &TestServer, jwt: &str) -> Vec<Value> {
    let events = server.stored_events(jwt).await;
    events.into_iter().map(|event| event["data"].clone()).collect()
}

async fn set_tenant_limits(server: &TestServer, body: &Value) -> (StatusCode, Value) {
    let response = (server.http.post(server.endpoint("/admin/tenant_limits")))
        .header("x-admin-token", ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    status_and_json(response).await
}

async fn tenant_limits(server: &TestServer, tenant: &str) -> Value {
    let response = (server.http.get(server.endpoint("/admin/tenant_limits")))
        .query(&[("tenant", tenant)])
        .header("x-admin-token", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn a_user_past_its_insert_rate_gets_429_and_stores_nothing_while_others_insert() {
    let server = TestServer::start_with(&["--user_insert_rate", "0.5", "--user_insert_burst", "3"]).await;
    let ann = server.signup("ann", "shop").await;
    let bob = server.signup("bob", "shop").await;
    for n in 0..3 {
        let (status, _, body) = insert(&server, &ann, n).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let refused = insert(&server, &ann, 3).await;
    assert_limited(&refused, "user_insert_rate");
    // The same tenant's other user has a bucket of its own.
    let (status, _, body) = insert(&server, &bob, 100).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        stored(&server, &ann).await,
        [json!(0), json!(1), json!(2), json!(100)]
    );
    // After the wait it named, the user inserts again.
    tokio::time::sleep(Duration::from_secs(refused.1.unwrap())).await;
    let (status, _, body) = insert(&server, &ann, 4).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The console's view counts the refusal.
    let limits = tenant_limits(&server, "shop").await;
    assert_eq!(limits["refused"]["user_insert_rate"], 1, "{limits}");
    assert_eq!(limits["tenant"]["in_force"]["user_insert_burst"], 3, "{limits}");
}

#[tokio::test]
async fn a_tenant_past_its_rate_is_refused_until_an_override_that_outlives_a_restart() {
    let flags = ["--tenant_insert_rate", "0.1", "--tenant_insert_burst", "2"];
    let server = TestServer::start_with(&flags).await;
    let ann = server.signup("ann", "busy").await;
    let bob = server.signup("bob", "busy").await;
    let eve = server.signup("eve", "quiet").await;
    for (jwt, n) in [(&ann, 0), (&bob, 1)] {
        let (status, _, body) = insert(&server, jwt, n).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Whoever of the tenant inserts next is refused; another tenant is not.
    assert_limited(&insert(&server, &bob, 2).await, "tenant_insert_rate");
    assert_limited(&insert(&server, &ann, 3).await, "tenant_insert_rate");
    let (status, _, body) = insert(&server, &eve, 4).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Only the admin sets limits, and only known ones.
    let body = json!({"tenant": "busy", "limits": {"tenant_insert_rate": 1000, "tenant_insert_burst": 1000}});
    let response = (server.http.post(server.endpoint("/admin/tenant_limits")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    for bad in [json!({"tenant_rate": 5}), json!({"tenant_insert_rate": -1})] {
        let (status, answer) = set_tenant_limits(&server, &json!({"tenant": "busy", "limits": bad})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
    }
    let (status, answer) = set_tenant_limits(&server, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["in_force"]["tenant_insert_rate"], 1000.0, "{answer}");
    // In force at once on the node that set it, without a restart.
    for n in 5..25 {
        let (status, _, body) = insert(&server, &bob, n).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(
        stored(&server, &ann).await.len(),
        22,
        "refused inserts stored nothing"
    );

    let dir = server.dir.clone();
    drop(server);
    let server = TestServer::start_in(dir, &flags).await;
    let limits = tenant_limits(&server, "busy").await;
    assert_eq!(
        limits["tenant"]["override"],
        json!({"tenant_insert_rate": 1000.0, "tenant_insert_burst": 1000}),
        "{limits}"
    );
    assert_eq!(limits["tenant"]["in_force"]["tenant_insert_rate"], 1000.0);
    assert_eq!(limits["defaults"]["tenant_insert_rate"], 0.1);
    let quiet = tenant_limits(&server, "quiet").await;
    assert_eq!(quiet["tenant"]["override"], json!({}), "{quiet}");
    assert_eq!(quiet["tenant"]["in_force"]["tenant_insert_rate"], 0.1);
}

#[tokio::test]
async fn password_checks_past_the_address_rate_are_refused_right_or_wrong_while_tokens_go_on() {
    let server = TestServer::start_with(&["--login_rate", "0.1", "--login_burst", "3"]).await;
    let (status, body) = server.create_user("ann", "acme").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let login = |password: &'static str| {
        let request = server.http.post(server.endpoint("/login"));
        async move {
            let body = json!({"username": "ann", "password": password});
            answer(request.json(&body).send().await.unwrap()).await
        }
    };
    let basic = |password: &'static str| {
        let request = server.http.get(server.endpoint("/verify"));
        async move { answer(request.basic_auth("ann", Some(password)).send().await.unwrap()).await }
    };
    // Three argon2 checks: a wrong login, a right one (whose password is then remembered, so the
    // right Basic credential costs none), and a wrong Basic one.
    assert_eq!(login("wrong").await.0, StatusCode::UNAUTHORIZED);
    let (status, _, body) = login(PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jwt = body["jwt"].as_str().unwrap().to_owned();
    assert_eq!(basic(PASSWORD).await.0, StatusCode::OK);
    assert_eq!(basic("wrong").await.0, StatusCode::UNAUTHORIZED);
    // The address's checks are used up: wrong passwords are refused, and so is a right one, even
    // one remembered (which costs no check), or a guesser would learn which guess is right from
    // which is not refused. Tokens go on.
    assert_limited(&login("wrong").await, "login_rate");
    assert_limited(&basic("wrong").await, "login_rate");
    assert_limited(&login(PASSWORD).await, "login_rate");
    assert_limited(&basic(PASSWORD).await, "login_rate");
    let verified = (server.http.get(server.endpoint("/verify")))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), StatusCode::OK);
}

async fn open_stream(server: &TestServer, jwt: &str) -> reqwest::Response {
    let request = server.http.get(server.endpoint("/sse")).bearer_auth(jwt);
    request.send().await.unwrap()
}

#[tokio::test]
async fn open_streams_are_bounded_per_user_and_per_tenant_and_freed_when_they_end() {
    let server = TestServer::start_with(&["--user_streams", "2", "--tenant_streams", "3"]).await;
    let ann = server.signup("ann", "crowd").await;
    let bob = server.signup("bob", "crowd").await;
    let cat = server.signup("cat", "crowd").await;
    let dan = server.signup("dan", "other").await;
    let ann_1 = open_stream(&server, &ann).await;
    let ann_2 = open_stream(&server, &ann).await;
    assert_eq!((ann_1.status(), ann_2.status()), (StatusCode::OK, StatusCode::OK));
    assert_limited(&answer(open_stream(&server, &ann).await).await, "user_streams");
    let bob_1 = open_stream(&server, &bob).await;
    assert_eq!(bob_1.status(), StatusCode::OK);
    assert_limited(&answer(open_stream(&server, &cat).await).await, "tenant_streams");
    // Another tenant is not counted with this one.
    assert_eq!(open_stream(&server, &dan).await.status(), StatusCode::OK);
    // The open streams still carry events.
    let mut bob_1 = crate::support::sse::SseStream::new(bob_1);
    let seq = server.insert_ok(&cat, "hello", json!(1)).await;
    assert_eq!(bob_1.next().await.id, seq);
    assert_eq!(tenant_limits(&server, "crowd").await["tenant"]["open_streams"], 3);

    // A stream that ends, however it ends, frees its place.
    drop(ann_1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = open_stream(&server, &cat).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the closed stream was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_override_set_on_one_node_is_in_force_on_the_other() {
    let nats = NatsCluster::start().await;
    let flags = [
        "--nats",
        &nats.urls(),
        "--nats_replicas",
        "3",
        "--user_insert_rate",
        "0.1",
        "--user_insert_burst",
        "1",
    ];
    let a = TestServer::start_with(&flags).await;
    let b = TestServer::start_with(&flags).await;
    let ann = a.signup("ann", "paying").await;
    assert_eq!(insert(&b, &ann, 0).await.0, StatusCode::OK);
    assert_limited(&insert(&b, &ann, 1).await, "user_insert_rate");
    let body = json!({"tenant": "paying", "limits": {"user_insert_rate": 100, "user_insert_burst": 100}});
    let (status, answer) = set_tenant_limits(&a, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // b reads the override again within two seconds.
    let started = Instant::now();
    while insert(&b, &ann, 2).await.0 != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the override never reached b"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        tenant_limits(&b, "paying").await["tenant"]["override"],
        json!({"user_insert_rate": 100.0, "user_insert_burst": 100})
    );
}

#[tokio::test]
async fn a_tenant_past_its_stored_bytes_gets_507_until_events_are_erased() {
    let server = TestServer::start_with(&["--tenant_max_bytes", "3000"]).await;
    let ann = server.signup("ann", "full").await;
    let bob = server.signup("bob", "full").await;
    let eve = server.signup("eve", "roomy").await;
    let big = json!({"text": "x".repeat(900)});
    let mut stored = 0;
    let refused = loop {
        let (status, body) = server.insert(&ann, "note", big.clone()).await;
        if status != StatusCode::OK {
            break (status, body);
        }
        stored += 1;
        assert!(stored < 10, "3,000 bytes hold about three events of 1 KB");
    };
    assert_eq!(stored, 3, "the quota is checked before each insert");
    assert_eq!(refused.0, StatusCode::INSUFFICIENT_STORAGE, "{}", refused.1);
    assert_eq!(refused.1["limit"], "tenant_max_bytes");
    // The whole tenant is full, admin inserts included; another tenant is not.
    assert_eq!(
        server.insert(&bob, "note", json!(1)).await.0,
        StatusCode::INSUFFICIENT_STORAGE
    );
    let response = (server.http.post(server.endpoint("/admin/insert")))
        .header("x-admin-token", ADMIN_TOKEN)
        .json(&json!({"tenant_name": "full", "event": "note", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(server.insert(&eve, "note", big.clone()).await.0, StatusCode::OK);
    // Erasing ann's events gives the bytes back.
    let body = json!({"admin_token": ADMIN_TOKEN, "username": "ann", "erase_events": true});
    let (status, answer) = server.post("/delete_user", &body).await;
    assert_eq!(
        (status, answer["events_erased"].clone()),
        (StatusCode::OK, json!(3))
    );
    assert_eq!(server.insert(&bob, "note", big).await.0, StatusCode::OK);
    // A larger quota for the tenant takes effect without a restart.
    let (status, answer) = set_tenant_limits(
        &server,
        &json!({"tenant": "full", "limits": {"tenant_max_bytes": 0}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for n in 0..5 {
        assert_eq!(
            server
                .insert(&bob, "note", json!({"text": "x".repeat(900), "n": n}))
                .await
                .0,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_bytes_quota_is_refused_in_cluster_mode_where_nothing_counts_it() {
    let nats = NatsCluster::start().await;
    let dir = tempfile::TempDir::new().unwrap();
    let flags = ["--nats", &nats.urls(), "--tenant_max_bytes", "1000"];
    let (status, logs) = crate::support::start_refused(dir.path(), &flags).await;
    assert!(!status.success());
    assert!(
        logs.contains("--tenant_max_bytes is counted on LMDB only"),
        "{logs}"
    );
    let node = crate::cluster::node(&nats).await;
    let (status, answer) =
        set_tenant_limits(&node, &json!({"tenant": "t", "limits": {"tenant_max_bytes": 5}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

#[tokio::test]
async fn racing_inserts_pass_a_tenants_stored_bytes_by_one_event_at_most() {
    // 3,000 bytes hold three of these events (as above). Fifty at once all find the tenant empty
    // before their commit: the quota holds only if it is checked again at the commit.
    let server = TestServer::start_with(&["--tenant_max_bytes", "3000"]).await;
    let ann = server.signup("ann", "full").await;
    let bodies = (0..50).map(|n| json!({"event": "note", "data": {"text": "x".repeat(900), "n": n}}));
    let answers = crate::support::insert_all_at_once(std::slice::from_ref(&server.url), &ann, bodies).await;
    let stored = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(stored, 3, "{answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != StatusCode::OK) {
        assert_eq!(*status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
        assert_eq!(body["limit"], "tenant_max_bytes", "{body}");
    }
    assert_eq!(server.stored_events(&ann).await.len(), 3);
}
