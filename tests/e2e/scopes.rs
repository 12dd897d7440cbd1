//! Scopes per event name with `--enforce_scopes`: `E:post` (or `*:post`) to insert `E`, `E:get` (or
//! `*:get`) to receive it, on replay, live delivery and resume alike.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{ADMIN_TOKEN, TestServer};

const ENFORCE: &[&str] = &["--enforce_scopes"];

/// Creates a user with `scopes` in tenant "t" and returns its JWT.
async fn user_with_scopes(server: &TestServer, username: &str, scopes: &[&str]) -> String {
    let (status, body) = server
        .create_user_with(json!({"username": username, "tenant_name": "t", "scopes": scopes}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.login(username).await
}

async fn set_scopes(server: &TestServer, username: &str, scopes: &[&str]) {
    let update = json!({"admin_token": ADMIN_TOKEN, "username": username, "scopes": scopes});
    assert_eq!(server.post("/update_user", &update).await.0, StatusCode::OK);
}

#[tokio::test]
async fn scopes_are_not_enforced_by_default() {
    let server = TestServer::start().await;
    let jwt = user_with_scopes(&server, "free", &[]).await;
    let mut stream = server.subscribe(&jwt).await;
    let seq = server.insert_ok(&jwt, "anything", json!(1)).await;
    assert_eq!(stream.next().await.id, seq);
}

#[tokio::test]
async fn inserting_an_event_needs_its_post_scope() {
    let server = TestServer::start_with(ENFORCE).await;
    let news_writer = user_with_scopes(&server, "news-writer", &["news:post", "news:get"]).await;
    server.insert_ok(&news_writer, "news", json!("ok")).await;
    let (status, body) = server.insert(&news_writer, "chat", json!("no")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["error"],
        "scope chat:post (or *:post) is needed to insert this event"
    );

    let anyone = user_with_scopes(&server, "any-writer", &["*:post"]).await;
    server.insert_ok(&anyone, "chat", json!(1)).await;
    server.insert_ok(&anyone, "room:42", json!(2)).await;
    let unscoped = user_with_scopes(&server, "nobody", &[]).await;
    assert_eq!(
        server.insert(&unscoped, "news", json!(3)).await.0,
        StatusCode::FORBIDDEN
    );

    // Nothing refused was stored: a `*:get` reader's replay holds only what was accepted.
    let reader = user_with_scopes(&server, "reader", &["*:get"]).await;
    let mut stream = server.subscribe(&reader).await;
    let names: Vec<String> = stream.take(3).await.into_iter().map(|e| e.event).collect();
    assert_eq!(names, ["news", "chat", "room:42"]);
    stream.expect_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn streams_carry_only_what_get_scopes_cover_and_resume_exactly() {
    let server = TestServer::start_with(ENFORCE).await;
    let writer = user_with_scopes(&server, "writer", &["*:post"]).await;
    server.insert_ok(&writer, "news", json!(1)).await;
    server.insert_ok(&writer, "chat", json!(2)).await;
    let news_3 = server.insert_ok(&writer, "news", json!(3)).await;

    // Replay: the newest of each name the reader may see, and nothing else.
    let reader = user_with_scopes(&server, "reader", &["news:get"]).await;
    let mut stream = server.subscribe(&reader).await;
    assert_eq!(stream.next().await.id, news_3);
    // Live: chat is skipped, news arrives.
    server.insert_ok(&writer, "chat", json!(4)).await;
    let news_5 = server.insert_ok(&writer, "news", json!(5)).await;
    let live = stream.next().await;
    assert_eq!((live.id, live.event.as_str()), (news_5, "news"));

    // Resume after the last news id the client saw: the skipped chat stays skipped, no duplicate.
    let mut resumed = server.subscribe_from(&reader, Some(news_3)).await;
    assert_eq!(resumed.next().await.id, news_5);
    resumed.expect_quiet(Duration::from_millis(300)).await;

    // A name with a colon is reachable through `*:get` only.
    let colon = server.insert_ok(&writer, "room:1", json!(6)).await;
    stream.expect_quiet(Duration::from_millis(300)).await;
    let star = user_with_scopes(&server, "star", &["*:get"]).await;
    let mut resumed = server.subscribe_from(&star, Some(news_5)).await;
    assert_eq!(resumed.next().await.id, colon);

    // No get scope at all: the stream is refused, as JSON.
    let response = reqwest::Client::new()
        .get(server.endpoint("/sse"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("get"), "{body}");
}

#[tokio::test]
async fn a_scope_change_applies_to_an_open_stream_at_once() {
    let server = TestServer::start_with(ENFORCE).await;
    let writer = user_with_scopes(&server, "writer", &["*:post"]).await;
    let reader = user_with_scopes(&server, "reader", &["news:get"]).await;
    let mut stream = server.subscribe(&reader).await;

    set_scopes(&server, "reader", &["chat:get"]).await;
    server.insert_ok(&writer, "news", json!("no longer yours")).await;
    let chat = server.insert_ok(&writer, "chat", json!("now yours")).await;
    let next = stream.next().await;
    assert_eq!((next.id, next.event.as_str()), (chat, "chat"));

    // Taking the last get scope ends the stream, as a connect without one is refused.
    set_scopes(&server, "reader", &["chat:post"]).await;
    assert!(stream.ends_within(Duration::from_secs(10)).await);
}
