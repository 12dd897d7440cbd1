//! The Broker API as the load generator uses it: create users, log in, insert, subscribe.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};

pub const PASSWORD: &str = "broker-load password 8d1f";

/// Where to send requests, and how to create users there.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub admin_token: String,
    /// Unique per run, so runs never see each other's users or events.
    pub run_id: String,
    /// Extra root certificate (`--ca`) for an `https://` server with a private CA.
    pub ca: Option<reqwest::Certificate>,
}

/// How a client proves who it is.
#[derive(Clone)]
pub enum Auth {
    Bearer(String),
    Basic(String),
}

impl Auth {
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::Bearer(jwt) => request.bearer_auth(jwt),
            Auth::Basic(username) => request.basic_auth(username, Some(PASSWORD)),
        }
    }
}

pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Target {
    /// A client for this server: one connection pool, trusting the web PKI and `--ca`.
    pub fn client(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder().use_rustls_tls();
        match &self.ca {
            Some(ca) => builder.add_root_certificate(ca.clone()),
            None => builder,
        }
    }

    pub fn new_client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(self.client().build()?)
    }

    pub fn tenant(&self) -> String {
        format!("load-{}", self.run_id)
    }

    pub fn username(&self, role: &str, index: usize) -> String {
        format!("load-{}-{role}-{index}", self.run_id)
    }

    /// Creates a user in this run's tenant.
    pub async fn create_user(&self, http: &reqwest::Client, username: &str) -> anyhow::Result<()> {
        let body = json!({"username": username, "password": PASSWORD, "tenant_name": self.tenant(), "admin_token": self.admin_token});
        let response = http
            .post(format!("{}/create_user", self.url))
            .json(&body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "create_user {username}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn login(&self, http: &reqwest::Client, username: &str) -> anyhow::Result<String> {
        let body = json!({"username": username, "password": PASSWORD});
        let response = http
            .post(format!("{}/login", self.url))
            .json(&body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("login {username}: {}", response.status());
        }
        let answer: Value = response.json().await?;
        Ok(answer["jwt"]
            .as_str()
            .context("login answer without jwt")?
            .to_owned())
    }

    /// Creates `count` users for `role` and returns their credentials.
    pub async fn users(
        &self,
        http: &reqwest::Client,
        role: &str,
        count: usize,
        basic: bool,
    ) -> anyhow::Result<Vec<Auth>> {
        let mut auths = Vec::with_capacity(count);
        for index in 0..count {
            let username = self.username(role, index);
            self.create_user(http, &username).await?;
            auths.push(if basic {
                Auth::Basic(username)
            } else {
                Auth::Bearer(self.login(http, &username).await?)
            });
        }
        Ok(auths)
    }

    /// One insert; `Ok(false)` for an answer that is not a success.
    pub async fn insert(
        &self,
        http: &reqwest::Client,
        auth: &Auth,
        event: &str,
        data: &Value,
    ) -> anyhow::Result<bool> {
        let request = auth.apply(http.post(format!("{}/insert", self.url)));
        let response = request
            .json(&json!({"event": event, "data": data}))
            .send()
            .await?;
        let ok = response.status().is_success();
        let _ = response.bytes().await;
        Ok(ok)
    }

    /// Opens `/sse` and returns the stream of `data:` payloads, parsed as JSON.
    pub async fn subscribe(&self, http: &reqwest::Client, auth: &Auth) -> anyhow::Result<SseFrames> {
        let response = auth.apply(http.get(format!("{}/sse", self.url))).send().await?;
        if !response.status().is_success() {
            bail!("sse: {}", response.status());
        }
        Ok(SseFrames {
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        })
    }
}

type ByteStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Reads SSE frames (`...\n\n`) and yields each frame's `data:` JSON; comments are skipped.
pub struct SseFrames {
    body: ByteStream,
    buffer: Vec<u8>,
}

impl SseFrames {
    /// The next data payload, or None when the stream ends.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&frame);
                if let Some(data) = text.lines().find_map(|line| line.strip_prefix("data:")) {
                    return Some(serde_json::from_str(data.trim_start()).unwrap_or(Value::Null));
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}
