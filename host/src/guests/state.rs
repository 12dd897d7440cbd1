//! The `state` import: a guest reads its own tenant's newest event of a name. Each answer is
//! remembered as a `LatestRead`, which the insert carries to the writer: the event commits only if
//! every read still holds then (see `store::writer`).

use super::bindings::broker::guest::state::Host as StateHost;
use super::sandbox::GuestState;
use crate::event_log::EventLog;
use crate::model::LatestRead;

/// Most `latest` calls in one `validate` call.
pub const MAX_READS_PER_CALL: usize = 16;
/// Most bytes of `latest` answers in one `validate` call.
pub const MAX_READ_BYTES_PER_CALL: usize = 1 << 20;

/// One call's reads: what it was answered, and why it must fail if it must.
#[derive(Default)]
pub struct CallReads {
    pub reads: Vec<LatestRead>,
    bytes: usize,
    /// Set when a read went over a bound or the store failed: the call's verdict is then void.
    pub failure: Option<String>,
}

impl CallReads {
    async fn read(&mut self, events: &dyn EventLog, tenant: &str, name: String) -> Option<String> {
        if self.failure.is_some() {
            return None;
        }
        if self.reads.len() >= MAX_READS_PER_CALL {
            self.failure = Some(format!(
                "guest called latest() more than {MAX_READS_PER_CALL} times in one call"
            ));
            return None;
        }
        let found = match events.latest_of(tenant, &name).await {
            Ok(found) => found.map(|event| (event.seq, event.data.to_string())),
            Err(error) => {
                tracing::error!(%error, tenant, "reading the latest event for a guest failed");
                self.failure = Some("the guest's state could not be read".into());
                return None;
            }
        };
        self.bytes += found.as_ref().map_or(0, |(_, data)| data.len());
        if self.bytes > MAX_READ_BYTES_PER_CALL {
            self.failure = Some(format!(
                "guest read more than {MAX_READ_BYTES_PER_CALL} bytes through latest() in one call"
            ));
            return None;
        }
        let seq = found.as_ref().map_or(0, |(seq, _)| *seq);
        self.reads.push(LatestRead { name, seq });
        found.map(|(_, data)| data)
    }
}

impl StateHost for GuestState {
    async fn latest(&mut self, name: String) -> Option<String> {
        let events = self.events.clone();
        self.reads.read(&*events, &self.tenant, name).await
    }
}
