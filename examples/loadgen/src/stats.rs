//! Latency samples and their percentiles.

use std::time::Duration;

use serde_json::{Value, json};

#[derive(Default)]
pub struct Latencies {
    micros: Vec<u64>,
}

impl Latencies {
    pub fn record(&mut self, elapsed: Duration) {
        self.micros
            .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_micros(&mut self, micros: u64) {
        self.micros.push(micros);
    }

    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    /// p50, p90, p99 and max in milliseconds (all 0 with no samples).
    pub fn summary(&mut self) -> Value {
        self.micros.sort_unstable();
        let at = |p: f64| -> f64 {
            if self.micros.is_empty() {
                return 0.0;
            }
            let index = ((self.micros.len() - 1) as f64 * p).round() as usize;
            self.micros[index] as f64 / 1000.0
        };
        json!({"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0)})
    }
}
