//! Accounts across nodes: a login two-factor code works once on the whole cluster, and a password
//! change or a tenant move made on one node closes the user's streams on every node.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::json;

use crate::cluster::node;
use crate::identity::{code_from, scan_qr};
use crate::support::nats::NatsCluster;
use crate::support::{ADMIN_TOKEN, PASSWORD};

#[tokio::test]
async fn a_login_code_works_once_on_the_whole_cluster() {
    let nats = NatsCluster::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let fields = json!({"username": "otp", "tenant_name": "t", "two_factor": true});
    assert_eq!(a.create_user_with(fields).await.0, StatusCode::OK);
    let (status, qr) = a
        .post(
            "/create_qr",
            &json!({"admin_token": ADMIN_TOKEN, "username": "otp", "issuer": "Acme"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{qr}");
    let url = scan_qr(qr["qr"].as_str().unwrap());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let login = json!({"username": "otp", "password": PASSWORD, "totp": code_from(&url, now)});
    // The same code on both nodes at once: one login, and the other refused.
    let (on_a, on_b) = tokio::join!(a.post("/login", &login), b.post("/login", &login));
    let statuses = [on_a.0, on_b.0];
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{on_a:?} {on_b:?}"
    );
    assert!(statuses.contains(&StatusCode::UNAUTHORIZED), "{on_a:?} {on_b:?}");
    // And once more on either node: still refused.
    assert_eq!(b.post("/login", &login).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(a.post("/login", &login).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_password_change_or_tenant_move_on_one_node_closes_streams_on_every_node() {
    let nats = NatsCluster::start().await;
    let (a, b) = (node(&nats).await, node(&nats).await);
    let changes = [
        ("pat", json!({"password": "a brand new password 5"})),
        ("tim", json!({"tenant_name": "elsewhere"})),
    ];
    for (username, change) in changes {
        // A tenant per round, so that each round's streams open on an empty replay.
        let tenant = format!("t-{username}");
        let jwt = a.signup(username, &tenant).await;
        let control_jwt = a.signup(&format!("{username}-friend"), &tenant).await;
        let mut on_a = a.subscribe(&jwt).await;
        let mut on_b = b.subscribe(&jwt).await;
        let mut control = b.subscribe(&control_jwt).await;
        let before = a.insert_ok(&control_jwt, "before", json!(username)).await;
        for stream in [&mut on_a, &mut on_b, &mut control] {
            assert_eq!(
                stream.next().await.id,
                before,
                "{username}: live before the change"
            );
        }
        let mut update = json!({"admin_token": ADMIN_TOKEN, "username": username});
        update
            .as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        assert_eq!(b.post("/update_user", &update).await.0, StatusCode::OK);
        assert!(
            on_a.ends_within(Duration::from_secs(5)).await,
            "{username}: the other node's stream"
        );
        assert!(
            on_b.ends_within(Duration::from_secs(5)).await,
            "{username}: this node's stream"
        );
        assert_eq!(
            a.insert(&jwt, "e", json!(1)).await.0,
            StatusCode::UNAUTHORIZED,
            "{username}"
        );
        let after = a.insert_ok(&control_jwt, "after", json!(username)).await;
        assert_eq!(
            control.next().await.id,
            after,
            "{username}: another user's stream lives on"
        );
    }
}
