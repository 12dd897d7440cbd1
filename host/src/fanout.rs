//! Live fan-out: one broadcast channel per tenant carrying each committed event as its SSE frame,
//! rendered once and shared by every subscriber, and one watch per user with open streams, bumped
//! when that user changes (revoked, moved, new password) so that only their streams re-check.
//! A slow receiver never slows a publisher: it lags, and its stream catches up from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use crate::model::Event;

/// One committed event as it goes on the wire, with its sequence number for ordering.
#[derive(Clone, Debug)]
pub struct Frame {
    pub seq: u64,
    pub bytes: Bytes,
}

impl Frame {
    /// `event:<name>\nid:<seq>\ndata:<compact JSON>\n\n`, the shape the npm `broker-client` parses.
    /// Event names hold no control characters and compact JSON has no raw newline, so a frame cannot
    /// forge fields.
    pub fn render(event: &Event) -> Self {
        let data = event.data.to_string();
        let mut text = String::with_capacity(event.event.len() + data.len() + 40);
        text.push_str("event:");
        text.push_str(&event.event);
        text.push_str("\nid:");
        text.push_str(&event.seq.to_string());
        text.push_str("\ndata:");
        text.push_str(&data);
        text.push_str("\n\n");
        Self {
            seq: event.seq,
            bytes: Bytes::from(text),
        }
    }
}

pub struct Fanout {
    /// Frames a subscriber may fall behind by before it must catch up from the store.
    live_buffer: usize,
    /// tenant name → live channel; created by the first subscriber, removed with the last.
    tenants: Mutex<HashMap<String, broadcast::Sender<Frame>>>,
    /// username → change counter; present only while that user has an open stream.
    users: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Fanout {
    pub fn new(live_buffer: usize) -> Self {
        Self {
            live_buffer: live_buffer.max(1),
            tenants: Mutex::default(),
            users: Mutex::default(),
        }
    }

    /// Joins `tenant`'s live frames. Join before reading the replay from the store, so that nothing
    /// committed in between is missed.
    pub fn subscribe(self: &Arc<Self>, tenant: &str) -> LiveFeed {
        let mut tenants = self.tenants.lock().expect("fanout lock");
        let receiver = tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| broadcast::channel(self.live_buffer).0)
            .subscribe();
        LiveFeed {
            receiver,
            tenant: tenant.to_owned(),
            fanout: self.clone(),
        }
    }

    /// Hands committed events, in commit order, to their tenants' live subscribers, if any. Each
    /// frame is rendered once here, whatever the number of subscribers.
    pub fn publish<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let tenants = self.tenants.lock().expect("fanout lock");
        for event in events {
            if let Some(channel) = tenants.get(&event.tenant_name) {
                let _ = channel.send(Frame::render(event));
            }
        }
    }

    /// Watches `username` for changes, until the returned guard is dropped.
    pub fn watch_user(self: &Arc<Self>, username: &str) -> UserWatch {
        let mut users = self.users.lock().expect("fanout lock");
        let receiver = users
            .entry(username.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        UserWatch {
            receiver,
            username: username.to_owned(),
            fanout: self.clone(),
        }
    }

    /// Tells `username`'s open streams, and only theirs, that the user record changed.
    pub fn user_changed(&self, username: &str) {
        if let Some(sender) = self.users.lock().expect("fanout lock").get(username) {
            sender.send_modify(|changes| *changes += 1);
        }
    }

    /// Tenants with a live channel (for tests and diagnostics).
    pub fn live_tenants(&self) -> usize {
        self.tenants.lock().expect("fanout lock").len()
    }
}

/// A subscriber's place in its tenant's live channel; the channel goes when its last feed does.
pub struct LiveFeed {
    pub receiver: broadcast::Receiver<Frame>,
    tenant: String,
    fanout: Arc<Fanout>,
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        let mut tenants = self.fanout.tenants.lock().expect("fanout lock");
        // This feed's receiver still counts until after `drop` returns.
        if tenants
            .get(&self.tenant)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            tenants.remove(&self.tenant);
        }
    }
}

/// A stream's watch on its user's record; the registry entry goes when the user's last watch does.
pub struct UserWatch {
    pub receiver: watch::Receiver<u64>,
    username: String,
    fanout: Arc<Fanout>,
}

impl Drop for UserWatch {
    fn drop(&mut self) {
        let mut users = self.fanout.users.lock().expect("fanout lock");
        if users
            .get(&self.username)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            users.remove(&self.username);
        }
    }
}
