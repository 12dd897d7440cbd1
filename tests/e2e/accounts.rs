//! Accounts: create, log in, verify, list, get, update, revoke — as an admin and a user see them.

use biscuit_auth::{Biscuit, PublicKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, JWT_SECRET, PASSWORD, TestServer, jwt_claims};

#[tokio::test]
async fn create_user_validates_and_refuses_duplicates_and_wrong_admin_tokens() {
    let server = TestServer::start().await;
    let (status, _) = server.create_user("bob", "tenant_1").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = server.create_user("bob", "tenant_2").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "username already taken"})
        )
    );

    let wrong = json!({"username": "eve", "tenant_name": "t", "admin_token": "guess"});
    let (status, body) = server.create_user_with(wrong).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "admin_token is incorrect"})
        )
    );

    let bad_scopes = json!({"username": "sam", "tenant_name": "t", "scopes": ["news:get:all"]});
    let (status, body) = server.create_user_with(bad_scopes).await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_REQUEST, json!({"error": "scopes are invalid"}))
    );

    for empty in [
        json!({"username": "", "tenant_name": "t"}),
        json!({"username": "x", "tenant_name": ""}),
    ] {
        let (status, _) = server.create_user_with(empty).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (_, users) = server
        .post("/list_users", &json!({"admin_token": ADMIN_TOKEN}))
        .await;
    assert_eq!(users.as_array().unwrap().len(), 1, "only bob exists: {users}");
}

#[tokio::test]
async fn concurrent_signups_of_one_name_let_exactly_one_win() {
    let server = TestServer::start().await;
    // Each attempt with its own tenant and password, so the stored record names its winner.
    let attempts = (0..8).map(|i| {
        let server = &server;
        let fields =
            json!({"username": "race", "tenant_name": format!("t{i}"), "password": format!("password {i}")});
        async move { server.create_user_with(fields).await }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let winners: Vec<usize> = (0..8).filter(|&i| answers[i].0 == StatusCode::OK).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != StatusCode::OK) {
        assert_eq!(
            (*status, body.clone()),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "username already taken"})
            ),
            "a loser is told why, and nothing else"
        );
    }
    // The stored user is the winner's, whole: its tenant and its password.
    let winner = winners[0];
    let (_, user) = server
        .post(
            "/get_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "race"}),
        )
        .await;
    assert_eq!(user["tenant_name"], format!("t{winner}"), "{user}");
    let server = &server;
    let login = |password: String| {
        let body = json!({"username": "race", "password": password});
        async move { server.post("/login", &body).await }
    };
    assert_eq!(login(format!("password {winner}")).await.0, StatusCode::OK);
    let loser = (winner + 1) % 8;
    assert_eq!(
        login(format!("password {loser}")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn login_issues_a_jwt_with_the_seed_claims() {
    let server = TestServer::start().await;
    let fields = json!({"username": "ann", "tenant_name": "t", "scopes": ["news:get", "news:post"]});
    assert_eq!(server.create_user_with(fields).await.0, StatusCode::OK);
    let jwt = server.login("ann").await;
    let claims = jwt_claims(&jwt);
    assert_eq!(claims["iss"], "Broker");
    assert_eq!(claims["sub"], "ann");
    assert_eq!(claims["aud"], "news:get,news:post");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        86_400
    );
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(&jwt, &key, &validation).expect("signed with --jwt_secret");

    let (status, _) = server
        .post("/login", &json!({"username": "ann", "password": "wrong"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .post("/login", &json!({"username": "nobody", "password": PASSWORD}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn verify_returns_a_biscuit_with_the_users_scopes_under_a_stable_root_key() {
    let server = TestServer::start().await;
    let fields = json!({"username": "svc", "tenant_name": "t", "scopes": ["news:get"]});
    assert_eq!(server.create_user_with(fields).await.0, StatusCode::OK);
    let jwt = server.login("svc").await;

    let verify = |auth: reqwest::RequestBuilder| async move {
        let response = auth.send().await.unwrap();
        crate::support::status_and_json(response).await
    };
    let (status, body) = verify(server.http.get(server.endpoint("/verify")).bearer_auth(&jwt)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["username"], "svc");
    assert_eq!(body["scopes"], json!(["news:get"]));
    assert_eq!(body["expiry"], jwt_claims(&jwt)["exp"]);
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect()
    };
    let key = bytes(&body["key"]);
    assert_eq!(key.len(), 32);
    let root = PublicKey::from_bytes(&key, biscuit_auth::Algorithm::Ed25519).unwrap();
    let biscuit = Biscuit::from(bytes(&body["token"]), root).expect("token signed by the root key");
    let source = biscuit.print_block_source(0).unwrap();
    assert!(source.contains(r#"right("news", "get")"#), "{source}");
    assert!(source.contains(r#"user("svc")"#), "{source}");
    // The token carries its expiry: a service authorizing it after the JWT's `exp` refuses it.
    let expiry = body["expiry"].as_u64().unwrap();
    let authorize_at = |secs: u64| {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let time = biscuit_auth::builder::fact("time", &[biscuit_auth::builder::date(&now)]);
        let mut authorizer = biscuit_auth::AuthorizerBuilder::new()
            .fact(time)
            .unwrap()
            .policy("allow if true")
            .unwrap()
            .build(&biscuit)
            .unwrap();
        authorizer.authorize().is_ok()
    };
    assert!(authorize_at(expiry - 10), "valid before its expiry");
    assert!(!authorize_at(expiry + 10), "refused after its expiry");

    let basic = server
        .http
        .get(server.endpoint("/verify"))
        .basic_auth("svc", Some(PASSWORD));
    let (status, basic_body) = verify(basic).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(basic_body["key"], body["key"], "one root key per server");

    let dir = server.kill();
    let server = TestServer::start_in(dir, &[]).await;
    let jwt = server.login("svc").await;
    let (_, after_restart) = verify(server.http.get(server.endpoint("/verify")).bearer_auth(&jwt)).await;
    assert_eq!(
        after_restart["key"], body["key"],
        "the root key survives a restart"
    );

    let (status, _) = verify(server.http.get(server.endpoint("/verify"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = verify(
        server
            .http
            .get(server.endpoint("/verify"))
            .bearer_auth("not.a.jwt"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = verify(
        server
            .http
            .get(server.endpoint("/verify"))
            .basic_auth("svc", Some("wrong")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_views_mask_secrets_and_update_leaves_absent_fields_alone() {
    let server = TestServer::start().await;
    let fields = json!({
        "username": "bob", "tenant_name": "t1", "email": "bob@example.com",
        "scopes": ["news:get"], "data": {"name": "Robert"}
    });
    assert_eq!(server.create_user_with(fields).await.0, StatusCode::OK);

    let (status, user) = server
        .post(
            "/get_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["password"], "***");
    assert_eq!(user["totp"], "***");
    assert_eq!(user["email"], "bob@example.com");
    assert_eq!(user["revoked"], false);
    let keys: Vec<&String> = user.as_object().unwrap().keys().collect();
    let expected = [
        "data",
        "email",
        "id",
        "password",
        "revoked",
        "scopes",
        "tenant_name",
        "totp",
        "two_factor",
        "username",
    ];
    assert_eq!(keys, expected);

    let update = json!({"admin_token": ADMIN_TOKEN, "username": "bob", "data": {"name": "Robert Falcon"}});
    assert_eq!(server.post("/update_user", &update).await.0, StatusCode::OK);
    let (_, user) = server
        .post(
            "/get_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "bob"}),
        )
        .await;
    assert_eq!(user["data"], json!({"name": "Robert Falcon"}));
    assert_eq!(
        user["email"], "bob@example.com",
        "absent fields are left unchanged"
    );
    assert_eq!(user["scopes"], json!(["news:get"]));
    assert_eq!(user["tenant_name"], "t1");

    let update =
        json!({"admin_token": ADMIN_TOKEN, "username": "bob", "password": "new password", "email": null});
    assert_eq!(server.post("/update_user", &update).await.0, StatusCode::OK);
    let (_, user) = server
        .post(
            "/get_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "bob"}),
        )
        .await;
    assert_eq!(user["email"], Value::Null, "null clears");
    let (status, _) = server
        .post("/login", &json!({"username": "bob", "password": "new password"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = server.post("/list_users", &json!({"admin_token": "wrong"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .post(
            "/get_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "ghost"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .post(
            "/update_user",
            &json!({"admin_token": "wrong", "username": "bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .post(
            "/update_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "bob", "scopes": ["x"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn revoked_users_are_refused_everywhere_and_their_streams_close() {
    let server = TestServer::start().await;
    let jwt = server.signup("mallory", "t").await;
    let mut stream = server.subscribe(&jwt).await;

    let revoke = json!({"admin_token": ADMIN_TOKEN, "username": "mallory"});
    assert_eq!(server.post("/revoke_user", &revoke).await.0, StatusCode::OK);
    assert!(
        stream.ends_within(std::time::Duration::from_secs(10)).await,
        "open stream closed"
    );

    assert_eq!(
        server.insert(&jwt, "e", json!(1)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let sse = server
        .http
        .get(server.endpoint("/sse"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::UNAUTHORIZED);
    let basic = server
        .http
        .get(server.endpoint("/verify"))
        .basic_auth("mallory", Some(PASSWORD));
    assert_eq!(basic.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .post("/login", &json!({"username": "mallory", "password": PASSWORD}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = server
        .post(
            "/revoke_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "ghost"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        server
            .post(
                "/revoke_user",
                &json!({"admin_token": "x", "username": "mallory"})
            )
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(server.post("/unrevoke_user", &revoke).await.0, StatusCode::OK);
    assert_eq!(
        server.insert(&jwt, "e", json!(1)).await.0,
        StatusCode::UNAUTHORIZED,
        "a revoke ended the JWTs issued before it, for good"
    );
    let fresh = server.login("mallory").await;
    assert_eq!(
        server.insert(&fresh, "e", json!(1)).await.0,
        StatusCode::OK,
        "unrevoked users are back with a fresh login"
    );
}
