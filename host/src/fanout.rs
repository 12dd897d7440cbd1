//! Live fan-out: one broadcast channel per tenant carrying committed events, and one channel that
//! announces changed users (revoked, moved tenant) so that their open streams can re-check and close.
//! A slow receiver never slows a publisher: it lags, and the SSE stream catches up from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::model::Event;

const USER_CHANGES_CHANNEL: usize = 256;

pub struct Fanout {
    /// Events a subscriber may fall behind by before it must catch up from the store.
    live_buffer: usize,
    /// tenant name → live channel; created on first subscription, dropped when nobody listens.
    tenants: Mutex<HashMap<String, broadcast::Sender<Arc<Event>>>>,
    /// Usernames whose record changed in a way that may end their streams.
    user_changes: broadcast::Sender<String>,
}

impl Fanout {
    pub fn new(live_buffer: usize) -> Self {
        Self {
            live_buffer: live_buffer.max(1),
            tenants: Mutex::default(),
            user_changes: broadcast::channel(USER_CHANGES_CHANNEL).0,
        }
    }

    /// Subscribes to `tenant`'s live events. Subscribe before reading the replay from the store, so
    /// that nothing committed in between is missed.
    pub fn subscribe(&self, tenant: &str) -> broadcast::Receiver<Arc<Event>> {
        let mut tenants = self.tenants.lock().expect("fanout lock");
        tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| broadcast::channel(self.live_buffer).0)
            .subscribe()
    }

    /// Hands a committed event to its tenant's live subscribers, if any.
    pub fn publish(&self, event: Arc<Event>) {
        let mut tenants = self.tenants.lock().expect("fanout lock");
        if let Some(channel) = tenants.get(&event.tenant_name) {
            if channel.receiver_count() == 0 {
                tenants.remove(&event.tenant_name);
            } else {
                let _ = channel.send(event);
            }
        }
    }

    pub fn watch_user_changes(&self) -> broadcast::Receiver<String> {
        self.user_changes.subscribe()
    }

    /// Tells open streams that `username`'s record changed (revoked, moved tenant, …).
    pub fn user_changed(&self, username: &str) {
        let _ = self.user_changes.send(username.to_owned());
    }
}
