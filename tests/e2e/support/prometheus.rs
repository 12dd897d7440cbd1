//! Debian's real `prometheus` server, started on loopback for one test: it scrapes Broker's
//! `/metrics` every second, so a test can check that what Broker exposes is what a real scraper
//! parses and stores, by asking Prometheus's own HTTP API.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::pebble::free_port;

pub struct Prometheus {
    child: Child,
    _dir: TempDir,
    log: Arc<Mutex<String>>,
    /// e.g. `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (e.g. "127.0.0.1:PORT", path /metrics) every second.
    pub async fn start(target: &str) -> Self {
        // scripts/test installs prometheus: a machine without it fails this test rather than skipping it.
        assert!(
            Command::new("prometheus").arg("--version").output().is_ok(),
            "the `prometheus` server is not installed (apt-get install prometheus; scripts/test installs it)"
        );
        let dir = TempDir::new().expect("temp dir");
        // The scrape timeout must not exceed the interval; no alerting, rules or remote write, so
        // nothing is sent anywhere but to `target`.
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 800ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: broker\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let data = dir.path().join("data");
        let port = free_port();
        let http = super::http_client()
            // The server is on loopback: an HTTP(S)_PROXY in the environment must not get in between.
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");

        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            // The default is under /var/lib/prometheus, shared with a system service if there is one.
            .arg(format!("--storage.tsdb.path={}", data.display()))
            // Loopback only, on a port of our own: never the default 0.0.0.0:9090.
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting prometheus");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        super::append_lines_to(stderr, log.clone());
        // From here on a failed assertion drops `prometheus`, which stops the process.
        let mut prometheus = Self {
            child,
            _dir: dir,
            log,
            url: format!("http://127.0.0.1:{port}"),
            http,
        };

        // /-/ready answers 503 until the TSDB is open and the configuration loaded (well under a
        // second here), then 200.
        let ready = format!("{}/-/ready", prometheus.url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log_tail());
            }
            if let Ok(response) = prometheus.http.get(&ready).send().await
                && response.status().is_success()
            {
                return prometheus;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus was not ready within 30 s:\n{}",
                prometheus.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an instant PromQL query; returns the first sample's value as f64, or None when the
    /// result vector is empty.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .unwrap_or_else(|error| panic!("querying prometheus for {promql}: {error}\n{}", self.log_tail()));
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|error| panic!("prometheus's answer to {promql} is not JSON: {error}"));
        // A bad expression is a bug in the test, not a value to wait for.
        assert_eq!(body["status"], "success", "prometheus rejected {promql}: {body}");
        let data = &body["data"];
        // A vector is `[{"metric": {..}, "value": [time, "7"]}, ..]`; a scalar is `[time, "7"]`.
        let sample = match data["resultType"].as_str() {
            Some("vector") => &data["result"].as_array()?.first()?["value"],
            Some("scalar") => &data["result"],
            _ => panic!("{promql} is not an instant vector or scalar: {body}"),
        };
        // Values are strings so that NaN and ±Inf survive JSON; f64's parser reads those spellings.
        let value = sample[1]
            .as_str()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no numeric value in prometheus's answer to {promql}: {body}"));
        Some(value)
    }

    /// Polls `query` until it returns a value >= `at_least` or `timeout` passes; panics with the
    /// last value and Prometheus's log tail on timeout.
    pub async fn wait_for(&self, promql: &str, at_least: f64, timeout: Duration) -> f64 {
        // Prometheus applies new scrape targets only every 5 s, so the first sample arrives about
        // 5-6 s after start: timeouts below ~15 s are flaky.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = self.query(promql).await;
            if let Some(value) = last
                && value >= at_least
            {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{promql} did not reach {at_least} within {timeout:?} (last value: {last:?}); prometheus's log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last lines Prometheus logged: enough to see a failed scrape or a refused flag.
    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
