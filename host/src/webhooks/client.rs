//! The HTTP side of a delivery: which URLs a webhook may have, and one signed POST with bounded
//! time, no redirects (a redirect could lead past `--webhook_hosts`) and a bounded read of the
//! answer. reqwest, on the same rustls and aws-lc-rs as Broker's own TLS, with the Mozilla roots.

use std::time::Duration;

use reqwest::Url;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::signature::SigningKey;

/// Longest webhook URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// The most of an answer's body that is read (to report it); the rest is dropped.
const MAX_ANSWER_BYTES: usize = 1024;

/// Checks that `url` is an absolute `http(s)` URL, with no credentials, on a host in `allowed`
/// (when it is not empty); answers it parsed.
pub fn check_url(url: &str, allowed: &[String]) -> Result<Url, String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("url must be at most {MAX_URL_BYTES} bytes"));
    }
    let parsed = Url::parse(url).map_err(|error| format!("url: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("url must be http:// or https://".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url must not carry credentials (sign with the secret instead)".into());
    }
    let host = parsed.host_str().ok_or("url must name a host")?;
    if !allowed.is_empty() && !allowed.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)) {
        return Err(format!("url: the host {host} is not in --webhook_hosts"));
    }
    Ok(parsed)
}

/// How one attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// Anything else, said for the admin (the status and the start of the answer, or the error).
    Failed(String),
}

pub struct Sender {
    client: reqwest::Client,
}

impl Sender {
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("Broker-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// POSTs `body` to `url` as Standard Webhooks message `id`, signed with `key` at `timestamp`.
    pub async fn post(&self, url: Url, key: &SigningKey, id: &str, timestamp: u64, body: Vec<u8>) -> Outcome {
        let signature = key.sign(id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut answer = match sent {
            Ok(answer) => answer,
            Err(error) => return Outcome::Failed(describe(&error)),
        };
        let status = answer.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let mut start = Vec::new();
        while start.len() < MAX_ANSWER_BYTES {
            match answer.chunk().await {
                Ok(Some(chunk)) => start.extend_from_slice(&chunk),
                _ => break,
            }
        }
        start.truncate(MAX_ANSWER_BYTES);
        let text = String::from_utf8_lossy(&start);
        let text = text.trim();
        let text: String = text.chars().take(200).collect();
        Outcome::Failed(
            format!("answered {status}: {text}")
                .trim_end_matches(": ")
                .to_owned(),
        )
    }
}

/// An error of the HTTP client, with its causes (reqwest's own text is only the outermost).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_on_allowed_hosts() {
        assert!(check_url("https://hooks.example.com/in", &[]).is_ok());
        assert!(check_url("http://127.0.0.1:9/x", &[]).is_ok());
        assert!(check_url("ftp://example.com/", &[]).is_err());
        assert!(check_url("/relative", &[]).is_err());
        assert!(check_url("https://user:pw@example.com/", &[]).is_err());
        let allowed = vec!["hooks.example.com".to_owned()];
        assert!(check_url("https://HOOKS.example.com/in", &allowed).is_ok());
        assert!(check_url("http://169.254.169.254/latest", &allowed).is_err());
        assert!(check_url(&format!("https://a.com/{}", "x".repeat(MAX_URL_BYTES)), &[]).is_err());
    }
}
