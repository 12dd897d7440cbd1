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

    /// p50, p90, p99 and max in milliseconds (all 0 with no samples), and the distribution as
    /// `histogram`: `[upper bound in ms, samples]` in buckets that grow by a quarter each, so that a
    /// report can draw it from the JSON line alone.
    pub fn summary(&mut self) -> Value {
        self.micros.sort_unstable();
        let at = |p: f64| -> f64 {
            if self.micros.is_empty() {
                return 0.0;
            }
            let index = ((self.micros.len() - 1) as f64 * p).round() as usize;
            self.micros[index] as f64 / 1000.0
        };
        json!({
            "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0),
            "histogram": self.histogram(),
        })
    }

    /// Samples per bucket, in order; empty buckets are left out. The first bucket ends at 10 µs.
    fn histogram(&self) -> Vec<(f64, u64)> {
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        let mut upper_us = 10.0_f64;
        for &sample in &self.micros {
            while sample as f64 > upper_us {
                upper_us *= 1.25;
            }
            let upper_ms = (upper_us * 1000.0).round() / 1e6;
            match buckets.last_mut() {
                Some((last, count)) if *last == upper_ms => *count += 1,
                _ => buckets.push((upper_ms, 1)),
            }
        }
        buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_counts_every_sample_once_in_growing_buckets() {
        let mut latencies = Latencies::default();
        for micros in [5, 9, 11, 200, 200, 5_000] {
            latencies.record_micros(micros);
        }
        let summary = latencies.summary();
        let buckets = summary["histogram"].as_array().unwrap();
        let total: u64 = buckets.iter().map(|b| b[1].as_u64().unwrap()).sum();
        assert_eq!(total, 6);
        assert_eq!(
            buckets[0],
            json!([0.01, 2]),
            "5 and 9 µs fall in the first bucket"
        );
        let bounds: Vec<f64> = buckets.iter().map(|b| b[0].as_f64().unwrap()).collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        assert!(*bounds.last().unwrap() >= 5.0, "the last bucket holds 5 ms");
    }
}
