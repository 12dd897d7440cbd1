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
