//! Retention (`--retain_age`, `--retain_per_name`): every `--retention_interval` the event log
//! removes what is too old or beyond the newest N of its name, never the newest of a name, in
//! bounded steps beside inserts (`EventLog::trim`). Off unless a flag sets it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::event_log::{EventLog, Keep};
use crate::idempotency;
use crate::metrics::metrics;

pub struct Retention {
    pub age: Option<Duration>,
    /// 0: every event of a name is kept (by count).
    pub per_name: u32,
    pub every: Duration,
}

impl Retention {
    pub fn is_on(&self) -> bool {
        self.age.is_some() || self.per_name > 0
    }

    /// Trims `events` every `every` until `shutdown`.
    pub fn spawn(self, events: Arc<dyn EventLog>, clock: Arc<Clock>, shutdown: CancellationToken) {
        if !self.is_on() {
            return;
        }
        tracing::info!(age = ?self.age, per_name = self.per_name, "retention on");
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(self.every) => {}
                }
                let ago = |period: Duration| {
                    let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
                    clock.now_millis().saturating_sub(ms)
                };
                let keep = Keep {
                    before_ms: self.age.map(ago),
                    per_name: (self.per_name > 0).then_some(self.per_name),
                    keyed_since_ms: Some(ago(idempotency::WINDOW)),
                };
                match events.trim(keep).await {
                    Ok(0) => {}
                    Ok(removed) => {
                        metrics().retention_removed.inc_by(removed);
                        tracing::info!(removed, "retention removed old events");
                    }
                    Err(error) => tracing::warn!(%error, "a retention pass failed; the next one tries again"),
                }
            }
        });
    }
}
