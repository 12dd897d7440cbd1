//! The Broker API as the load generator uses it: create users, log in, insert, subscribe.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::raw_sse::ChunkedBody;
use crate::{Server, pocketbase};

pub const PASSWORD: &str = "broker-load password 8d1f";

/// Where to send requests, and how to create users there.
#[derive(Clone)]
pub struct Target {
    /// The node this target talks to: the first of `nodes`, or the one `for_client` picked.
    pub url: String,
    /// Every node given with `--url` (several for a cluster): clients take them in turn.
    pub nodes: Vec<String>,
    pub admin_token: String,
    /// Unique per run, so runs never see each other's users or events.
    pub run_id: String,
    /// Extra root certificate (`--ca`) for an `https://` server with a private CA.
    pub ca: Option<reqwest::Certificate>,
    /// Broker, or PocketBase (see `pocketbase`).
    pub server: Server,
}

/// How a client proves who it is.
#[derive(Clone)]
pub enum Auth {
    Bearer(String),
    Basic(String),
}

impl Auth {
    /// The `Authorization` header's value.
    pub fn header_value(&self) -> String {
        match self {
            Auth::Bearer(jwt) => format!("Bearer {jwt}"),
            Auth::Basic(username) => {
                let credentials = BASE64_STANDARD.encode(format!("{username}:{PASSWORD}"));
                format!("Basic {credentials}")
            }
        }
    }

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

/// A refusal's `Retry-After`, in seconds (1 when it has none), as the JavaScript client reads it.
pub fn retry_after_secs(response: &reqwest::Response) -> u64 {
    (response.headers().get("retry-after"))
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .unwrap_or(1)
}

/// Sleeps `seconds`, or until `stop` is set: a phase that ends mid-wait need not sit it out.
pub async fn wait_unless_stopped(seconds: u64, stop: &std::sync::atomic::AtomicBool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

impl Target {
    /// The same target, talking to the node client `client` uses (clients take the nodes in turn).
    /// The same server, as another tenant of this run (`suffix` names it).
    pub fn in_tenant(&self, suffix: &str) -> Target {
        Target {
            run_id: format!("{}-{suffix}", self.run_id),
            ..self.clone()
        }
    }

    pub fn for_client(&self, client: usize) -> Target {
        Target {
            url: self.nodes[client % self.nodes.len()].clone(),
            ..self.clone()
        }
    }

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
        if self.server == Server::Pocketbase {
            if basic {
                bail!("PocketBase has no Basic auth: this scenario is Broker's only");
            }
            let token = pocketbase::superuser(self, http).await?;
            return Ok(vec![Auth::Bearer(token); count]);
        }
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
        let url = match self.server {
            Server::Broker => format!("{}/insert", self.url),
            Server::Pocketbase => pocketbase::insert_url(self),
        };
        let request = auth.apply(http.post(url));
        let response = request
            .json(&json!({"event": event, "data": data}))
            .send()
            .await?;
        let ok = response.status().is_success();
        let _ = response.bytes().await;
        Ok(ok)
    }

    /// Opens `path` (`/sse`, maybe with a query) as `auth`; on PocketBase, `/api/realtime`
    /// subscribed to this run's collection.
    pub async fn subscribe(
        &self,
        http: &reqwest::Client,
        auth: &Auth,
        path: &str,
    ) -> anyhow::Result<SseFrames> {
        if self.server == Server::Pocketbase {
            if path != "/sse" {
                bail!("PocketBase streams here carry the whole collection: no filters");
            }
            let mut frames = self.open_stream(http, auth, "/api/realtime").await?;
            pocketbase::subscribe(self, http, auth, &mut frames).await?;
            return Ok(frames);
        }
        self.open_stream(http, auth, path).await
    }

    /// Opens `path` and returns its stream of frames: read off the socket for `http://` (see
    /// `raw_sse`), through `http` for `https://`.
    async fn open_stream(
        &self,
        http: &reqwest::Client,
        auth: &Auth,
        path: &str,
    ) -> anyhow::Result<SseFrames> {
        let url = reqwest::Url::parse(&self.url)?;
        let body = if url.scheme() == "http" {
            let host = url.host_str().context("a URL without a host")?;
            let host_port = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
            Body::Raw(ChunkedBody::get(&host_port, path, &auth.header_value()).await?)
        } else {
            let response = auth.apply(http.get(format!("{}{path}", self.url))).send().await?;
            if !response.status().is_success() {
                bail!("sse: {}", response.status());
            }
            Body::Reqwest(Box::pin(response.bytes_stream()))
        };
        Ok(SseFrames {
            body,
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
        })
    }
}

type ByteStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Where a stream's bytes come from.
enum Body {
    Raw(ChunkedBody),
    Reqwest(ByteStream),
}

impl Body {
    /// Appends the next bytes of the body to `buffer`; false at its end.
    async fn read_into(&mut self, buffer: &mut Vec<u8>) -> bool {
        match self {
            Body::Raw(body) => body.read_into(buffer).await,
            Body::Reqwest(body) => match body.next().await {
                Some(Ok(chunk)) => {
                    buffer.extend_from_slice(&chunk);
                    true
                }
                _ => false,
            },
        }
    }
}

/// Reads SSE frames (`...\n\n`) and yields each frame's `data:` payload; comments and frames
/// without data are skipped. Frames are cut in place in one buffer that is reused, so a subscriber
/// taking 100,000 frames a second allocates nothing per frame.
pub struct SseFrames {
    body: Body,
    buffer: Vec<u8>,
    /// Where the first frame not yet handed out begins in `buffer`.
    start: usize,
    /// Where to resume looking for a frame's end: no "\n\n" begins before it.
    scanned: usize,
}

impl SseFrames {
    /// The next frame's data (after `data:` and its optional space, without the line end), or None
    /// when the stream ends. Borrowed from the buffer until the next call.
    pub async fn next_data(&mut self) -> Option<&[u8]> {
        loop {
            if let Some(range) = self.next_data_range() {
                return Some(&self.buffer[range]);
            }
            // Only a partial frame is left: keep it, drop what was handed out, and read more.
            self.buffer.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
            if !self.body.read_into(&mut self.buffer).await {
                return None;
            }
        }
    }

    /// The next frame's event name and data, copied (for scenarios that read few frames), or
    /// None when the stream ends. A frame without an `event:` line has an empty name.
    pub async fn next_named(&mut self) -> Option<(String, Vec<u8>)> {
        loop {
            if let Some(end) = find_blank_line(&self.buffer, self.scanned) {
                let frame = &self.buffer[self.start..end + 1];
                let name = frame
                    .split(|&b| b == b'\n')
                    .find_map(|line| line.strip_prefix(b"event:"))
                    .map(|name| String::from_utf8_lossy(name).trim().to_owned())
                    .unwrap_or_default();
                let data = data_line(frame)
                    .map(|range| frame[range].to_vec())
                    .unwrap_or_default();
                self.start = end + 2;
                self.scanned = self.start;
                return Some((name, data));
            }
            self.scanned = self.buffer.len().saturating_sub(1).max(self.start);
            self.buffer.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
            if !self.body.read_into(&mut self.buffer).await {
                return None;
            }
        }
    }

    /// Consumes complete frames from the buffer until one has data; that data's place in `buffer`.
    fn next_data_range(&mut self) -> Option<std::ops::Range<usize>> {
        loop {
            let Some(end) = find_blank_line(&self.buffer, self.scanned) else {
                // A "\n\n" may straddle the next chunk: look again from the last byte.
                self.scanned = self.buffer.len().saturating_sub(1).max(self.start);
                return None;
            };
            let frame = self.start..end + 1;
            self.start = end + 2;
            self.scanned = self.start;
            if let Some(data) = data_line(&self.buffer[frame.clone()]) {
                return Some(frame.start + data.start..frame.start + data.end);
            }
        }
    }
}

/// The position of the first "\n" of the first "\n\n" at or after `from`.
fn find_blank_line(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == b'\n')?;
        if bytes.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        at += 1;
    }
}

/// Where the first `data:` line's value lies within `frame`.
fn data_line(frame: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut line_start = 0;
    for line in frame.split(|&b| b == b'\n') {
        if line.starts_with(b"data:") {
            let (mut start, mut end) = (line_start + b"data:".len(), line_start + line.len());
            if start < end && frame[start] == b' ' {
                start += 1;
            }
            if start < end && frame[end - 1] == b'\r' {
                end -= 1;
            }
            return Some(start..end);
        }
        line_start += line.len() + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` through `SseFrames` and collects every data payload.
    fn payloads(chunks: &[&str]) -> Vec<String> {
        let chunks: Vec<reqwest::Result<bytes::Bytes>> = chunks
            .iter()
            .map(|chunk| Ok(bytes::Bytes::copy_from_slice(chunk.as_bytes())))
            .collect();
        let mut frames = SseFrames {
            body: Body::Reqwest(Box::pin(futures_util::stream::iter(chunks))),
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut out = Vec::new();
            while let Some(data) = frames.next_data().await {
                out.push(String::from_utf8(data.to_vec()).unwrap());
            }
            out
        })
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let stream =
            ":comment\n\nevent:e\nid:1\ndata:{\"n\":1}\n\nid:2\ndata: {\"n\":2}\r\n\n\nevent:x\n\ndata:\n\n";
        let expected = ["{\"n\":1}", "{\"n\":2}", ""];
        assert_eq!(payloads(&[stream]), expected);
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(payloads(&[a, b]), expected, "split at {split}");
        }
        let bytes: Vec<String> = stream.chars().map(String::from).collect();
        let bytes: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(payloads(&bytes), expected);
    }
}
