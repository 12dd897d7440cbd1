//! Identity: two-factor login with an authenticator app (QR code), password resets with one-time
//! codes, password-strength and email checks, and NTP-corrected time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, PASSWORD, TestServer};

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// What an authenticator app does: decode the QR PNG and read the otpauth URL.
pub fn scan_qr(base64_png: &str) -> String {
    let png = base64::engine::general_purpose::STANDARD
        .decode(base64_png)
        .expect("padded base64");
    let image = image::load_from_memory(&png).expect("a PNG").to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().expect("a readable QR code").1
}

/// The current code for the secret in an otpauth URL, as the app would show it.
pub fn code_from(url: &str, at: u64) -> String {
    let secret = url.split("secret=").nth(1).unwrap().split('&').next().unwrap();
    let secret = totp_rs::Secret::try_from_base32(secret).unwrap();
    let totp = totp_rs::Builder::new().with_secret(secret).build().unwrap();
    totp.generate(at).to_string()
}

async fn login_with(server: &TestServer, username: &str, totp: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"username": username, "password": PASSWORD});
    if let Some(code) = totp {
        body["totp"] = json!(code);
    }
    server.post("/login", &body).await
}

#[tokio::test]
async fn two_factor_login_works_with_the_code_an_authenticator_app_computes() {
    let server = TestServer::start().await;
    let (status, _) = server
        .create_user_with(json!({"username": "tfa", "tenant_name": "t", "two_factor": true}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        login_with(&server, "tfa", None).await.0,
        StatusCode::UNAUTHORIZED,
        "a code is required"
    );

    let (status, qr) = server
        .post(
            "/create_qr",
            &json!({"admin_token": ADMIN_TOKEN, "username": "tfa", "issuer": "Acme"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{qr}");
    let url = scan_qr(qr["qr"].as_str().unwrap());
    let (status, body) = server
        .post(
            "/create_qr",
            &json!({"admin_token": ADMIN_TOKEN, "username": "tfa", "issuer": "x".repeat(1150)}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an issuer no QR code can hold: {body}"
    );
    assert!(url.starts_with("otpauth://totp/Acme:tfa?secret="), "{url}");
    assert!(url.contains("issuer=Acme"), "{url}");

    assert_eq!(
        login_with(&server, "tfa", Some("000000")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let code = code_from(&url, unix_now());
    let (status, body) = login_with(&server, "tfa", Some(&code)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        login_with(&server, "tfa", Some(&code)).await.0,
        StatusCode::UNAUTHORIZED,
        "a code works once"
    );

    let basic = server
        .http
        .get(server.endpoint("/verify"))
        .basic_auth("tfa", Some(PASSWORD));
    assert_eq!(
        basic.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "Basic cannot pass two-factor"
    );
    // Positive control: the same request for a user without two-factor is let in.
    assert_eq!(server.create_user("plain", "t").await.0, StatusCode::OK);
    let plain = server
        .http
        .get(server.endpoint("/verify"))
        .basic_auth("plain", Some(PASSWORD));
    assert_eq!(plain.send().await.unwrap().status(), StatusCode::OK);
    let (_, user) = server
        .post(
            "/get_user",
            &json!({"admin_token": ADMIN_TOKEN, "username": "tfa"}),
        )
        .await;
    assert_eq!(
        (user["two_factor"].clone(), user["totp"].clone()),
        (json!(true), json!("***"))
    );
    assert!(
        !server
            .logs()
            .contains(url.split("secret=").nth(1).unwrap().split('&').next().unwrap())
    );

    let (status, _) = server
        .post(
            "/create_qr",
            &json!({"admin_token": "wrong", "username": "tfa", "issuer": "Acme"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.create_user("plain", "t").await;
    let (status, _) = server
        .post(
            "/create_qr",
            &json!({"admin_token": ADMIN_TOKEN, "username": "plain", "issuer": "Acme"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "no QR for users without two-factor"
    );
}

#[tokio::test]
async fn a_reset_code_sets_a_new_password_once() {
    let server = TestServer::start().await;
    server.create_user("forgetful", "t").await;
    let (status, body) = server
        .post(
            "/create_totp",
            &json!({"admin_token": ADMIN_TOKEN, "username": "forgetful"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let code = body["totp"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);

    let reset =
        |totp: &str| json!({"totp": totp, "username": "forgetful", "password": "a brand new passphrase"});
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(
        server.post("/password_reset", &reset(wrong)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.post("/password_reset", &reset(&code)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.post("/password_reset", &reset(&code)).await.0,
        StatusCode::UNAUTHORIZED,
        "used up"
    );

    let (status, _) = server
        .post(
            "/login",
            &json!({"username": "forgetful", "password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        login_with(&server, "forgetful", None).await.0,
        StatusCode::UNAUTHORIZED,
        "old password gone"
    );
    let (status, _) = server
        .post(
            "/create_totp",
            &json!({"admin_token": "wrong", "username": "forgetful"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_reset_code_is_refused() {
    let server = TestServer::start_with(&["--totp_duration", "1"]).await;
    server.create_user("late", "t").await;
    let (_, body) = server
        .post(
            "/create_totp",
            &json!({"admin_token": ADMIN_TOKEN, "username": "late"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reset = json!({"totp": body["totp"], "username": "late", "password": "another new passphrase"});
    assert_eq!(
        server.post("/password_reset", &reset).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn weak_passwords_are_refused_only_with_the_checker_on() {
    let lenient = TestServer::start().await;
    let weak = json!({"username": "w", "tenant_name": "t", "password": "password1"});
    assert_eq!(lenient.create_user_with(weak.clone()).await.0, StatusCode::OK);

    let strict = TestServer::start_with(&["--password_checker", "true"]).await;
    let (status, body) = strict.create_user_with(weak).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("password is too weak because "),
        "{body}"
    );
    strict.create_user("s", "t").await;
    let update = json!({"admin_token": ADMIN_TOKEN, "username": "s", "password": "abc123"});
    assert_eq!(
        strict.post("/update_user", &update).await.0,
        StatusCode::BAD_REQUEST
    );
    let (_, code) = strict
        .post(
            "/create_totp",
            &json!({"admin_token": ADMIN_TOKEN, "username": "s"}),
        )
        .await;
    let reset = json!({"totp": code["totp"], "username": "s", "password": "qwerty"});
    assert_eq!(
        strict.post("/password_reset", &reset).await.0,
        StatusCode::BAD_REQUEST,
        "a weak reset is a 400"
    );
    let reset = json!({"totp": code["totp"], "username": "s", "password": "violet giraffe umbrella 42"});
    assert_eq!(
        strict.post("/password_reset", &reset).await.0,
        StatusCode::OK,
        "and did not use up the code"
    );
}

#[tokio::test]
async fn throwaway_and_malformed_emails_are_refused() {
    let server = TestServer::start().await;
    for email in ["someone@mailinator.com", "not-an-email"] {
        let (status, body) = server
            .create_user_with(json!({"username": "e", "tenant_name": "t", "email": email}))
            .await;
        assert_eq!(
            (status, body),
            (StatusCode::BAD_REQUEST, json!({"error": "email is invalid"}))
        );
    }
    server
        .create_user_with(json!({"username": "e", "tenant_name": "t", "email": "e@example.com"}))
        .await;
    let update = json!({"admin_token": ADMIN_TOKEN, "username": "e", "email": "e@mailinator.com"});
    assert_eq!(
        server.post("/update_user", &update).await.0,
        StatusCode::BAD_REQUEST
    );
}

/// A minimal SNTP server on loopback whose clock runs `offset_secs` ahead of this machine's.
fn start_ntp_responder(offset_secs: u64) -> std::net::SocketAddr {
    start_gated_ntp_responder(offset_secs, Arc::new(AtomicBool::new(true)))
}

/// The same, answering only while `answering` is true (requests before are dropped).
fn start_gated_ntp_responder(offset_secs: u64, answering: Arc<AtomicBool>) -> std::net::SocketAddr {
    const NTP_UNIX_DELTA: u64 = 2_208_988_800;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut request = [0u8; 48];
        while let Ok((_, peer)) = socket.recv_from(&mut request) {
            if !answering.load(Ordering::SeqCst) {
                continue;
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let seconds = now.as_secs() + offset_secs + NTP_UNIX_DELTA;
            let fraction = (u64::from(now.subsec_nanos()) << 32) / 1_000_000_000;
            let timestamp = (seconds << 32) | fraction;
            let mut reply = [0u8; 48];
            reply[0] = 0x24; // leap 0, version 4, mode 4 (server)
            reply[1] = 1; // stratum 1
            reply[24..32].copy_from_slice(&request[40..48]); // originate = the client's transmit
            reply[32..40].copy_from_slice(&timestamp.to_be_bytes());
            reply[40..48].copy_from_slice(&timestamp.to_be_bytes());
            let _ = socket.send_to(&reply, peer);
        }
    });
    address
}

fn issued_at(jwt: &str) -> u64 {
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["iat"].as_u64().unwrap()
}

#[tokio::test]
async fn jwt_times_follow_ntp_and_fall_back_to_the_local_clock() {
    const AHEAD: u64 = 3 * 24 * 3600;
    let ntp = start_ntp_responder(AHEAD);
    let server = TestServer::start_with(&["--ntp_servers", &ntp.to_string()]).await;
    server.wait_for_log("clock synchronised with NTP", 1).await;
    let iat = issued_at(&server.signup("timely", "t").await);
    assert!(
        iat.abs_diff(unix_now() + AHEAD) < 60,
        "iat {iat} follows the NTP clock"
    );

    // Nobody answers on this port: the local clock is used, and the log says so.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = TestServer::start_with(&["--ntp_servers", &silent.local_addr().unwrap().to_string()]).await;
    let iat = issued_at(&server.signup("local", "t").await);
    assert!(iat.abs_diff(unix_now()) < 60, "iat {iat} follows the local clock");
    server
        .wait_for_log("no NTP server answered; using the local clock", 1)
        .await;
}

#[tokio::test]
async fn the_clock_is_checked_again_every_ntp_interval() {
    const AHEAD: u64 = 2 * 24 * 3600;
    // The NTP server is silent at start, and answers from some time later.
    let answering = Arc::new(AtomicBool::new(false));
    let ntp = start_gated_ntp_responder(AHEAD, answering.clone());
    let server = TestServer::start_with(&["--ntp_servers", &ntp.to_string(), "--ntp_interval", "1"]).await;
    server
        .wait_for_log("no NTP server answered; using the local clock", 1)
        .await;
    let iat = issued_at(&server.signup("early", "t").await);
    assert!(iat.abs_diff(unix_now()) < 60, "iat {iat} follows the local clock");
    answering.store(true, Ordering::SeqCst);
    server.wait_for_log("clock synchronised with NTP", 1).await;
    let iat = issued_at(&server.signup("later", "t").await);
    assert!(
        iat.abs_diff(unix_now() + AHEAD) < 60,
        "iat {iat} follows the NTP clock after a re-check"
    );
}
