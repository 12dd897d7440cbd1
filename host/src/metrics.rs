//! Prometheus metrics (`--metrics_port`): one process-wide set, recorded where the work happens and
//! rendered in the OpenMetrics text format by `prometheus-client`. No label is per tenant or per
//! user, so the number of series stays bounded whatever the traffic.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of `render`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// A known route, or `other`.
    pub route: &'static str,
    /// `2xx` … `5xx`.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The limit's flag name.
    pub limit: &'static str,
}

/// Everything Broker counts.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    /// `accepted`, `rejected_by_guest`, `refused_by_scope`, `conflict`, `failed`.
    pub inserts: Family<OutcomeLabels, Counter>,
    pub commit_batch_size: Histogram,
    pub commit_seconds: Histogram,
    /// Inserts whose guest read state that changed before commit, judged again.
    pub guest_rejudgements: Counter,
    /// Event frames handed to SSE streams (replay, live and catch-up).
    pub deliveries: Counter,
    /// Streams that fell behind the live channel and caught up from the store.
    pub lag_recoveries: Counter,
    /// Cluster mode: replay or catch-up reads served by a server behind this node, made again.
    pub stale_reads: Counter,
    /// Cluster mode: replay and catch-up reads, by how they were made (`batch`, `consumer`).
    pub cluster_reads: Family<KindLabels, Counter>,
    pub open_streams: Gauge,
    pub open_connections: Gauge,
    pub guest_call_seconds: Histogram,
    /// `timeout`, `out_of_memory`, `trap`, `invalid_json`, `unavailable`.
    pub guest_failures: Family<KindLabels, Counter>,
    /// Time a password check waited for an argon2 worker.
    pub password_queue_wait_seconds: Histogram,
    /// Requests refused by a limit (`crate::limits`), by the limit's flag name.
    pub limited: Family<LimitLabels, Counter>,
    /// Events retention removed.
    pub retention_removed: Counter,
    /// Webhook requests by outcome: `delivered` (2xx) or `failed`.
    pub webhook_attempts: Family<OutcomeLabels, Counter>,
    /// Webhooks this node paused after failing `--webhook_attempts` times in a row.
    pub webhook_pauses: Counter,
    /// Webhooks this node is delivering (holds the lease of).
    pub webhooks_delivering: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Buckets from 10 µs to about 20 s, doubling: guest calls, commits and queue waits all fit.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_01, 2.0, 22)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("broker");
        let metrics = Self {
            requests: Family::default(),
            inserts: Family::default(),
            commit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_seconds: Histogram::new(seconds_buckets()),
            guest_rejudgements: Counter::default(),
            deliveries: Counter::default(),
            lag_recoveries: Counter::default(),
            stale_reads: Counter::default(),
            cluster_reads: Family::default(),
            open_streams: Gauge::default(),
            open_connections: Gauge::default(),
            guest_call_seconds: Histogram::new(seconds_buckets()),
            guest_failures: Family::default(),
            password_queue_wait_seconds: Histogram::new(seconds_buckets()),
            limited: Family::default(),
            retention_removed: Counter::default(),
            webhook_attempts: Family::default(),
            webhook_pauses: Counter::default(),
            webhooks_delivering: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests by route and status class",
            metrics.requests.clone(),
        );
        r.register("inserts", "Inserts by outcome", metrics.inserts.clone());
        r.register(
            "commit_batch_size",
            "Inserts per group commit",
            metrics.commit_batch_size.clone(),
        );
        r.register(
            "commit_seconds",
            "Time of one group commit",
            metrics.commit_seconds.clone(),
        );
        r.register(
            "guest_rejudgements",
            "Inserts judged again because state their guest read changed before commit",
            metrics.guest_rejudgements.clone(),
        );
        r.register(
            "deliveries",
            "Event frames handed to SSE streams",
            metrics.deliveries.clone(),
        );
        r.register(
            "lag_recoveries",
            "SSE streams that fell behind live and caught up from the store",
            metrics.lag_recoveries.clone(),
        );
        r.register(
            "stale_reads",
            "Cluster mode: replay or catch-up reads served by a NATS server behind this node, made again",
            metrics.stale_reads.clone(),
        );
        r.register(
            "cluster_reads",
            "Cluster mode: replay and catch-up reads, by how (batch: batch direct get; consumer: an ordered consumer, for the newest of more names than a batch answers)",
            metrics.cluster_reads.clone(),
        );
        // Served at 0 from the start (on LMDB too, like the other cluster counters): a dashboard
        // finds both kinds before the first read.
        for kind in ["batch", "consumer"] {
            let _ = metrics.cluster_reads.get_or_create(&KindLabels { kind });
        }
        r.register("open_streams", "Open SSE streams", metrics.open_streams.clone());
        r.register(
            "open_connections",
            "Open client connections",
            metrics.open_connections.clone(),
        );
        r.register(
            "guest_call_seconds",
            "Time of one guest call",
            metrics.guest_call_seconds.clone(),
        );
        r.register(
            "guest_failures",
            "Guest calls that failed, by kind",
            metrics.guest_failures.clone(),
        );
        r.register(
            "password_queue_wait_seconds",
            "Time a password check waited for an argon2 worker",
            metrics.password_queue_wait_seconds.clone(),
        );
        r.register(
            "limited",
            "Requests refused by a per-user, per-tenant or per-address limit, by limit",
            metrics.limited.clone(),
        );
        r.register(
            "retention_removed",
            "Events retention removed (--retain_age, --retain_per_name)",
            metrics.retention_removed.clone(),
        );
        r.register(
            "webhook_attempts",
            "Webhook requests by outcome (delivered: answered 2xx)",
            metrics.webhook_attempts.clone(),
        );
        r.register(
            "webhook_pauses",
            "Webhooks paused after failing --webhook_attempts times in a row",
            metrics.webhook_pauses.clone(),
        );
        r.register(
            "webhooks_delivering",
            "Webhooks this node delivers (holds the lease of)",
            metrics.webhooks_delivering.clone(),
        );
        Self { registry, ..metrics }
    }

    pub fn cluster_read(&self, kind: &'static str) {
        self.cluster_reads.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn insert(&self, outcome: &'static str) {
        self.inserts.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn guest_failure(&self, kind: &'static str) {
        self.guest_failures.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn limited(&self, limit: &'static str) {
        self.limited.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Requests refused by `limit` so far.
    pub fn limited_count(&self, limit: &'static str) -> u64 {
        self.limited.get_or_create(&LimitLabels { limit }).get()
    }

    pub fn request(&self, route: &'static str, status: u16) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.get_or_create(&RequestLabels { route, class }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Counts one open thing (a stream, a connection) for as long as it lives.
pub struct OpenGuard(&'static Gauge);

impl OpenGuard {
    pub fn new(gauge: &'static Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_once_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.insert("accepted");
        metrics.request("/insert", 200);
        metrics.request("other", 404);
        let text = metrics.render();
        assert!(
            text.contains("broker_inserts_total{outcome=\"accepted\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("broker_http_requests_total{route=\"other\",class=\"4xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE broker_commit_seconds histogram"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
