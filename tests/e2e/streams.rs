//! Stream lifetimes: a change to one user ends only that user's streams, and a resume point the
//! server never issued does not hide new events.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{ADMIN_TOKEN, TestServer};

#[tokio::test]
async fn revoking_one_user_ends_only_that_users_streams() {
    let server = TestServer::start().await;
    let alice = server.signup("alice", "shared").await;
    let bob = server.signup("bob", "shared").await;
    let mut alice_stream = server.subscribe(&alice).await;
    let mut bob_stream = server.subscribe(&bob).await;
    // Both streams are live before the revoke: an end seen later is the revoke's doing.
    let before = server.insert_ok(&bob, "before", json!(0)).await;
    assert_eq!(alice_stream.next().await.id, before);
    assert_eq!(bob_stream.next().await.id, before);

    let revoke = json!({"admin_token": ADMIN_TOKEN, "username": "alice"});
    assert_eq!(server.post("/revoke_user", &revoke).await.0, StatusCode::OK);
    assert!(alice_stream.ends_within(Duration::from_secs(10)).await);

    let seq = server.insert_ok(&bob, "after", json!("still here")).await;
    let event = bob_stream.next().await;
    assert_eq!(
        (event.id, event.event.as_str()),
        (seq, "after"),
        "bob's stream lives on"
    );
}

#[tokio::test]
async fn a_last_event_id_beyond_the_newest_event_resumes_from_now() {
    let server = TestServer::start().await;
    let jwt = server.signup("stale", "t").await;
    server.insert_ok(&jwt, "a", json!(1)).await;
    server.insert_ok(&jwt, "b", json!(2)).await;

    // A client that remembers id 1000 (a restored database, a typo) must still get new events.
    let mut stream = server.subscribe_from(&jwt, Some(1000)).await;
    let seq = server.insert_ok(&jwt, "c", json!(3)).await;
    assert_eq!(seq, 3);
    let event = stream.next().await;
    assert_eq!((event.id, event.data.clone()), (3, json!(3)));
}

#[tokio::test]
async fn a_password_change_ends_the_users_jwts_and_open_streams() {
    let server = TestServer::start().await;
    let jwt = server.signup("dave", "t").await;
    let mut stream = server.subscribe(&jwt).await;
    let mut unaffected = server.subscribe(&server.signup("erin", "t").await).await;
    let before = server.insert_ok(&jwt, "before", json!(0)).await;
    assert_eq!(
        stream.next().await.id,
        before,
        "the stream is live before the change"
    );
    assert_eq!(unaffected.next().await.id, before);

    let change = json!({"admin_token": ADMIN_TOKEN, "username": "dave", "password": "another password 7"});
    assert_eq!(server.post("/update_user", &change).await.0, StatusCode::OK);
    assert!(
        stream.ends_within(Duration::from_secs(10)).await,
        "the stream closed"
    );
    assert_eq!(
        server.insert(&jwt, "e", json!(1)).await.0,
        StatusCode::UNAUTHORIZED,
        "the JWT issued before the change is refused"
    );

    // A fresh login with the new password works; a data-only update ends nothing.
    let (status, body) = server
        .post(
            "/login",
            &json!({"username": "dave", "password": "another password 7"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let fresh = body["jwt"].as_str().unwrap().to_owned();
    // dave's own stream, opened with the new credential, survives a data-only update of dave.
    let mut own = server.subscribe(&fresh).await;
    assert_eq!(own.next().await.event, "before", "the replay");
    let data_only = json!({"admin_token": ADMIN_TOKEN, "username": "dave", "data": {"x": 1}});
    assert_eq!(server.post("/update_user", &data_only).await.0, StatusCode::OK);
    let seq = server.insert_ok(&fresh, "e", json!(2)).await;
    assert_eq!(
        own.next().await.id,
        seq,
        "dave's stream lives on after a data-only update"
    );
    assert_eq!(unaffected.next().await.id, seq);
}

#[tokio::test]
async fn a_stream_ends_when_its_credential_expires() {
    // JWTs live 2 s here: the stream must close by itself, and the client reconnects with a new one.
    let server = TestServer::start_with(&["--jwt_expiry", "2"]).await;
    let jwt = server.signup("brief", "t").await;
    let issued = std::time::Instant::now();
    let mut stream = server.subscribe(&jwt).await;
    // Live first: a stream that closed at once would also "end".
    let seq = server.insert_ok(&jwt, "e", json!(1)).await;
    assert_eq!(stream.next().await.id, seq);
    assert!(
        stream.ends_within(Duration::from_secs(15)).await,
        "closed at expiry"
    );
    // exp is in whole seconds: 2 s after issue, so more than 1 s after the login.
    let lived = issued.elapsed();
    assert!(
        lived >= Duration::from_secs(1),
        "closed after {lived:?}, before the JWT expired"
    );
    // The server is fine: a fresh login streams again.
    let mut again = server.subscribe(&server.login("brief").await).await;
    assert_eq!(again.next().await.id, seq);
}
