//! Safe by default: Broker never serves beyond this machine with public or short secrets, the
//! systemd unit with an empty environment file refuses to start, metrics listen on loopback, and
//! backups are private files that no planted symlink can redirect.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::support::{TestServer, start_refused};

const BROKER: &str = env!("CARGO_BIN_EXE_broker");
/// 44 bytes, as `openssl rand -base64 32` prints.
const STRONG: &str = "q3Jx9vT2pL4sW8mZ1bN6cR3fH5jD0gAkY7eU2iO4tQc=";

#[tokio::test]
async fn public_or_short_secrets_are_refused_beyond_loopback() {
    let dir = TempDir::new().unwrap();
    // Every interface, each secret in turn public or short, the other strong.
    let cases: [(&[&str], &str); 3] = [
        (
            &["--admin_token", "letmein", "--jwt_secret", STRONG],
            "admin_token",
        ),
        (&["--admin_token", STRONG, "--jwt_secret", "secret"], "jwt_secret"),
        (
            &[
                "--admin_token",
                STRONG,
                "--jwt_secret",
                "31-bytes-is-one-byte-too-short",
            ],
            "jwt_secret",
        ),
    ];
    for (secrets, named) in cases {
        let mut flags = vec!["--bind", "0.0.0.0"];
        flags.extend_from_slice(secrets);
        let (status, log) = start_refused(dir.path(), &flags).await;
        assert!(!status.success(), "{log}");
        for needed in [
            format!("--{named}"),
            "openssl rand -base64 32".to_owned(),
            format!("BROKER_{}", named.to_uppercase()),
            "--bind 127.0.0.1".to_owned(),
        ] {
            assert!(log.contains(&needed), "{needed} missing from: {log}");
        }
    }
    // Strong secrets serve every interface.
    let server = TestServer::start_with(&[
        "--bind",
        "0.0.0.0",
        "--admin_token",
        STRONG,
        "--jwt_secret",
        STRONG,
    ])
    .await;
    assert!(server.url.contains("0.0.0.0"), "{}", server.url);
    let user = json!({"username": "ann", "password": "pw", "tenant_name": "t", "admin_token": STRONG});
    assert_eq!(server.post("/create_user", &user).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_readme_walk_through_works_on_loopback_with_the_public_defaults() {
    let server = TestServer::start_with(&["--admin_token", "letmein", "--jwt_secret", "secret"]).await;
    let user = json!({"username": "bob", "password": "password1", "admin_token": "letmein", "tenant_name": "tenant_1"});
    assert_eq!(server.post("/create_user", &user).await.0, StatusCode::OK);
    let (status, _) = server
        .post("/login", &json!({"username": "bob", "password": "password1"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    server.wait_for_log("accepted on loopback only", 2).await;
}

#[tokio::test]
async fn the_systemd_unit_with_an_empty_environment_file_refuses_to_start() {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/broker.service"))
            .unwrap();
    assert!(
        unit.contains("install -d -m 0700 /etc/broker"),
        "the install steps make a private directory"
    );
    let work = TempDir::new().unwrap();
    // The unit's own environment (its Environment= lines, paths moved into the temporary
    // directory), an empty environment file, and nothing else: as systemd would start it.
    let mut command = Command::new(BROKER);
    command
        .env_clear()
        .env("BROKER_NTP_SERVERS", "")
        .env("BROKER_PORT", "0");
    for line in unit.lines().filter_map(|line| line.strip_prefix("Environment=")) {
        for pair in line.split_whitespace() {
            let (name, value) = pair.split_once('=').unwrap();
            let value = value.replace("/var/lib/broker", &work.path().display().to_string());
            command.env(name, value);
        }
    }
    let output = tokio::task::spawn_blocking(move || command.stdin(Stdio::null()).output().unwrap())
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("openssl rand -base64 32"), "{log}");
}

#[tokio::test]
async fn metrics_listen_on_loopback_unless_told_otherwise() {
    let server = TestServer::start_with(&[
        "--bind",
        "0.0.0.0",
        "--admin_token",
        STRONG,
        "--jwt_secret",
        STRONG,
        "--metrics_port",
        "0",
    ])
    .await;
    server.wait_for_log("metrics on http://127.0.0.1:", 1).await;
}

/// `broker backup --db DB --to TO`, with the umask a shell usually has.
async fn backup(db: &Path, to: &Path) -> std::process::Output {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "umask 022 && exec {BROKER} backup --db \"$0\" --to \"$1\""
        ))
        .arg(db)
        .arg(to);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

#[tokio::test]
async fn backups_are_private_and_never_follow_a_planted_symlink() {
    let server = TestServer::start().await;
    let jwt = server.signup("keeper", "t").await;
    server.insert_ok(&jwt, "note", json!("kept")).await;
    let db = server.dir.path().join("db");

    // A new directory: made 0700, the copy 0600.
    let place = TempDir::new().unwrap();
    let fresh = place.path().join("nightly");
    let made = backup(&db, &fresh).await;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("data.mdb")), 0o600);

    // A directory someone planted links in, at the copy's name and at its partial name.
    let planted = place.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    let victims = [
        place.path().join("victim-final"),
        place.path().join("victim-partial"),
    ];
    for victim in &victims {
        std::fs::write(victim, "do not overwrite").unwrap();
    }
    symlink(&victims[0], planted.join("data.mdb")).unwrap();
    symlink(&victims[1], planted.join("data.partial")).unwrap();
    let made = backup(&db, &planted).await;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    for victim in &victims {
        assert_eq!(std::fs::read_to_string(victim).unwrap(), "do not overwrite");
    }
    let copy = planted.join("data.mdb");
    assert!(
        std::fs::symlink_metadata(&copy).unwrap().file_type().is_file(),
        "the link was replaced"
    );
    assert_eq!(mode(&copy), 0o600);
    assert!(!planted.join("data.partial").exists());

    // The copy is a working database: a Broker on it has the user and the event.
    let restored_dir = TempDir::new().unwrap();
    std::fs::create_dir(restored_dir.path().join("db")).unwrap();
    std::fs::copy(&copy, restored_dir.path().join("db/data.mdb")).unwrap();
    let restored = TestServer::start_in(restored_dir.into(), &[]).await;
    let jwt = restored.login("keeper").await;
    let event = restored
        .subscribe(&jwt)
        .await
        .next_within(Duration::from_secs(5))
        .await;
    assert_eq!(event.expect("the kept event is replayed").data, json!("kept"));
}
