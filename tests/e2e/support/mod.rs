//! `TestServer`: the real `broker` binary on a loopback port with a temporary LMDB directory, and
//! small helpers that read like what a user does (sign up, log in, insert, subscribe).

#![allow(dead_code, reason = "each test binary module uses a different subset")]

pub mod nats;
pub mod pebble;
pub mod prometheus;
pub mod sse;
pub mod tls;
pub mod webhooks;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

pub use sse::SseStream;

pub const ADMIN_TOKEN: &str = "test-admin-token-7f3a";
pub const JWT_SECRET: &str = "test-jwt-secret-9c1e";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestServer {
    child: Option<Child>,
    pub url: String,
    /// The data directory (database, guests): survives a restart of the server on it.
    pub dir: Arc<TempDir>,
    logs: Arc<Mutex<String>>,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_in(Arc::new(TempDir::new().expect("temp dir")), extra).await
    }

    /// Starts `broker` on `dir` (reusing its database when it has one).
    pub async fn start_in(dir: Arc<TempDir>, extra: &[&str]) -> Self {
        Self::start_logging(dir, extra, "info").await
    }

    /// Like `start_in`, with `BROKER_LOG` set to `filter` (e.g. to see a debug line a test checks).
    pub async fn start_logging(dir: Arc<TempDir>, extra: &[&str], filter: &str) -> Self {
        Self::start_with_env(dir, extra, &[("BROKER_LOG", filter)]).await
    }

    /// Like `start_in`, with environment variables set for the process (flags still win).
    pub async fn start_with_env(dir: Arc<TempDir>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        // Everything that can panic comes before the spawn or kills the child first: a panic
        // between the two would leave a broker running after the test.
        let http = http_client().build().unwrap();
        let mut child = broker_command(dir.path(), extra)
            .envs(env.iter().copied())
            .spawn()
            .expect("starting the broker binary");
        let logs = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("broker listening on ").nth(1) {
                    // The URL ends the text line; in a JSON line a quote ends it.
                    let address = rest.split(['"', ' ']).next().unwrap_or_default();
                    let _ = address_tx.send(address.trim().to_owned());
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let url = tokio::task::spawn_blocking(move || address_rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap();
        let Ok(url) = url else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("broker did not start; its log:\n{}", logs.lock().unwrap());
        };
        Self {
            child: Some(child),
            url,
            dir,
            logs,
            http,
        }
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to flush anything that was not already committed.
    pub fn kill(mut self) -> Arc<TempDir> {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        self.dir.clone()
    }

    /// SIGTERM, then waits for the process to exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
    }

    /// `GET /admin/guests` with the admin token: what an operator sees of the guests.
    pub async fn admin_guests(&self) -> Value {
        let response = self
            .http
            .get(self.endpoint("/admin/guests"))
            .header("x-admin-token", ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// The server's process id (for signals a test sends itself).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// POSTs `body` as JSON; returns the status and the parsed JSON answer (Null when not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.endpoint(path))
            .json(body)
            .send()
            .await
            .unwrap();
        status_and_json(response).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.endpoint(path))
            .body(body)
            .send()
            .await
            .unwrap();
        status_and_json(response).await
    }

    pub async fn create_user(&self, username: &str, tenant: &str) -> (StatusCode, Value) {
        self.create_user_with(json!({"username": username, "tenant_name": tenant}))
            .await
    }

    /// create_user with the test password and admin token filled in unless `fields` sets them.
    pub async fn create_user_with(&self, fields: Value) -> (StatusCode, Value) {
        let mut body = json!({"password": PASSWORD, "admin_token": ADMIN_TOKEN});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        self.post("/create_user", &body).await
    }

    pub async fn login(&self, username: &str) -> String {
        let (status, body) = self
            .post("/login", &json!({"username": username, "password": PASSWORD}))
            .await;
        assert_eq!(status, StatusCode::OK, "login of {username}: {body}");
        body["jwt"].as_str().unwrap().to_owned()
    }

    /// Creates a user in `tenant` and logs it in; returns its JWT.
    pub async fn signup(&self, username: &str, tenant: &str) -> String {
        let (status, body) = self.create_user(username, tenant).await;
        assert_eq!(status, StatusCode::OK, "create_user {username}: {body}");
        self.login(username).await
    }

    pub async fn insert(&self, jwt: &str, event: &str, data: Value) -> (StatusCode, Value) {
        let request = self.http.post(self.endpoint("/insert")).bearer_auth(jwt);
        let response = request
            .json(&json!({"event": event, "data": data}))
            .send()
            .await
            .unwrap();
        status_and_json(response).await
    }

    /// Inserts and asserts it was accepted; returns the event's sequence number.
    pub async fn insert_ok(&self, jwt: &str, event: &str, data: Value) -> u64 {
        let (status, body) = self.insert(jwt, event, data).await;
        assert_eq!(status, StatusCode::OK, "insert {event}: {body}");
        body["seq"].as_u64().unwrap()
    }

    /// The caller's tenant's stored events, oldest first (one history page of up to 500).
    pub async fn stored_events(&self, jwt: &str) -> Vec<Value> {
        let response = (self.http.get(self.endpoint("/events")))
            .query(&[("after", "0"), ("limit", "500")])
            .bearer_auth(jwt)
            .send()
            .await
            .unwrap();
        let (status, page) = status_and_json(response).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["events"].as_array().unwrap().clone()
    }

    pub async fn subscribe(&self, jwt: &str) -> SseStream {
        self.subscribe_from(jwt, None).await
    }

    pub async fn subscribe_from(&self, jwt: &str, last_event_id: Option<u64>) -> SseStream {
        let mut request = self.http.get(self.endpoint("/sse")).bearer_auth(jwt);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "subscribe");
        SseStream::new(response)
    }
}

/// The `broker` command line every test starts from: loopback, free ports, test secrets, `dir`.
pub fn broker_command(dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
    command
        .args(["--port", "0", "--tls_port", "0", "--bind", "127.0.0.1"])
        .args(["--admin_token", ADMIN_TOKEN, "--jwt_secret", JWT_SECRET])
        // Hermetic by default: no NTP traffic unless a test points it at its own responder.
        .arg("--ntp_servers=")
        .arg("--db")
        .arg(dir.join("db"))
        .arg("--guests")
        .arg(guests_dir(dir))
        .args(extra)
        .env("BROKER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Runs `broker` with `extra` flags, expecting it to refuse to start; returns its exit status and
/// log. Fails the test if it is still running after 30 s.
pub async fn start_refused(dir: &Path, extra: &[&str]) -> (ExitStatus, String) {
    let mut child = broker_command(dir, extra)
        .spawn()
        .expect("starting the broker binary");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("broker started with {extra:?} although it should have refused");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    (status, log)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The claims of a JWT (its payload, unverified).
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A reqwest client builder. reqwest's rustls backend (used by the HTTPS tests) needs a
/// process-wide crypto provider before any client is built; aws-lc-rs, as Broker uses.
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
}

pub async fn status_and_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn guests_dir(dir: &Path) -> PathBuf {
    dir.join("guests")
}

/// A guest component built by host/build.rs (`passthrough`, `redact`, `require_fields`, `hostile`).
pub fn test_guest(name: &str) -> PathBuf {
    PathBuf::from(env!("BROKER_TEST_GUESTS")).join(format!("{name}.wasm"))
}

/// Installs a guest into a data directory's guests folder as `file` (e.g. `acme.wasm`), atomically.
pub fn install_guest(dir: &Path, file: &str, guest: &Path) {
    let guests = guests_dir(dir);
    std::fs::create_dir_all(&guests).unwrap();
    let partial = guests.join(format!("{file}.partial"));
    std::fs::copy(guest, &partial).unwrap();
    std::fs::rename(partial, guests.join(file)).unwrap();
}

impl TestServer {
    /// Waits until the log holds `needle` at least `count` times.
    pub async fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.logs().matches(needle).count() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends each insert `body` from a client of its own, on a connection opened beforehand, all at the
/// same moment (clients take the `base_urls` in turn): what a race between clients looks like to
/// the server. Returns each answer, in the order of `bodies`.
pub async fn insert_all_at_once(
    base_urls: &[String],
    jwt: &str,
    bodies: impl Iterator<Item = Value>,
) -> Vec<(StatusCode, Value)> {
    let bodies: Vec<Value> = bodies.collect();
    let start = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let mut attempts = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let base = &base_urls[i % base_urls.len()];
        let client = reqwest::Client::new();
        client.get(format!("{base}/")).send().await.unwrap();
        let (url, jwt, start) = (format!("{base}/insert"), jwt.to_owned(), start.clone());
        attempts.push(tokio::spawn(async move {
            start.wait().await;
            let response = client.post(url).bearer_auth(jwt).json(&body).send();
            status_and_json(response.await.unwrap()).await
        }));
    }
    let mut answers = Vec::new();
    for attempt in attempts {
        answers.push(attempt.await.unwrap());
    }
    answers
}

/// Appends each line `stream` yields to `log`, on a thread of its own, until the stream ends: how
/// the real servers the tests start (Prometheus, NATS) keep their logs for panic messages.
pub fn append_lines_to(stream: impl std::io::Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// A data directory whose guests folder holds each `(file, test guest)` pair.
pub fn data_dir_with(guests: &[(&str, &str)]) -> Arc<TempDir> {
    let dir = TempDir::new().unwrap();
    for (file, guest) in guests {
        install_guest(dir.path(), file, &test_guest(guest));
    }
    Arc::new(dir)
}
