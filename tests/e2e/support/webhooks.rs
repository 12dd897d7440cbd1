//! A real webhook receiver (`tests/webhooks/receiver`): Python's HTTP server verifying every
//! request with PyPI's `standardwebhooks`, not with Broker's code; each request it saw is a JSON
//! line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::ADMIN_TOKEN;
use super::TestServer;

/// A Standard Webhooks secret (24 key bytes).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub struct Receiver {
    child: Child,
    base: String,
    seen: Arc<Mutex<Vec<Value>>>,
    http: reqwest::Client,
}

impl Receiver {
    pub async fn start(secret: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/webhooks/receiver");
        let mut child = Command::new(script)
            .arg(secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting tests/webhooks/receiver (scripts/test installs it)");
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let record: Value = serde_json::from_str(&line).expect("the receiver prints JSON lines");
                if let Some(port) = record["listening"].as_u64() {
                    let _ = port_tx.send(port);
                } else {
                    sink.lock().unwrap().push(record);
                }
            }
        });
        let port = tokio::task::spawn_blocking(move || port_rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap();
        let Ok(port) = port else {
            let _ = child.kill();
            panic!("the webhook receiver did not start");
        };
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            seen,
            http: reqwest::Client::new(),
        }
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    /// Later deliveries are answered `status`.
    pub async fn answer_with(&self, status: u16) {
        let response = self
            .http
            .post(format!("{}/status/{status}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    /// Later deliveries wait `ms` before they are answered.
    pub async fn delay(&self, ms: u64) {
        let response = self
            .http
            .post(format!("{}/delay/{ms}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    /// Later deliveries are verified with `secret`.
    pub async fn verify_with(&self, secret: &str) {
        let response = self
            .http
            .post(format!("{}/secret", self.base))
            .body(secret.to_owned())
            .send();
        assert_eq!(response.await.unwrap().status(), 204);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests so far that verified and were answered 2xx: the delivered ones.
    pub fn delivered(&self) -> Vec<Value> {
        let seen = self.seen();
        seen.into_iter()
            .filter(|r| {
                r["verified"] == true && r["status"].as_u64().is_some_and(|s| (200..300).contains(&s))
            })
            .collect()
    }

    /// Waits until `done` holds of every request seen so far; panics with them after `within`.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver saw only:\n{seen:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sequence numbers in `records`, in the order they came.
pub fn seqs(records: &[Value]) -> Vec<u64> {
    records.iter().filter_map(|r| r["seq"].as_u64()).collect()
}

impl TestServer {
    /// An admin call to the webhook API: `GET` when `body` is null, else `POST`.
    pub async fn webhooks_api(&self, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let url = self.endpoint(path);
        let request = match body {
            Value::Null => self.http.get(url),
            body => self.http.post(url).json(&body),
        };
        let response = request.header("x-admin-token", ADMIN_TOKEN).send().await.unwrap();
        super::status_and_json(response).await
    }

    /// Registers a webhook; answers its id.
    pub async fn register_webhook(&self, tenant: &str, url: &str, events: &str) -> String {
        let body = json!({"tenant": tenant, "url": url, "events": events, "secret": SECRET});
        let (status, answer) = self.webhooks_api("/admin/webhooks", body).await;
        assert_eq!(status, 200, "{answer}");
        answer["id"].as_str().unwrap().to_owned()
    }

    /// The webhook `id` as `GET /admin/webhooks` shows it.
    pub async fn webhook(&self, id: &str) -> Value {
        let (status, answer) = self.webhooks_api("/admin/webhooks", Value::Null).await;
        assert_eq!(status, 200, "{answer}");
        let listed = answer["webhooks"].as_array().unwrap();
        listed
            .iter()
            .find(|w| w["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }
}
