//! Live fan-out: one broadcast channel per tenant carrying each committed event as its SSE frame,
//! rendered once and shared by every subscriber, and one watch per user with open streams, bumped
//! when that user changes (revoked, moved, new password) so that only their streams re-check.
//! A slow receiver never slows a publisher: it lags, and its stream catches up from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{broadcast, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;

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

    /// The event name, read back from the frame's first line (so a frame carries nothing else).
    pub fn event_name(&self) -> &str {
        let line = self.bytes.strip_prefix(b"event:").unwrap_or_default();
        let name = line.split(|&b| b == b'\n').next().unwrap_or_default();
        std::str::from_utf8(name).unwrap_or_default()
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
            changes: WatchStream::from_changes(receiver),
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

/// Removes `key` from `registry` when the handle being dropped is its last receiver (that handle's
/// receiver still counts until after `drop` returns, hence `<= 1`).
fn forget_if_last<S>(registry: &Mutex<HashMap<String, S>>, key: &str, receivers: impl Fn(&S) -> usize) {
    let mut entries = registry.lock().expect("fanout lock");
    if entries.get(key).is_some_and(|sender| receivers(sender) <= 1) {
        entries.remove(key);
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        forget_if_last(
            &self.fanout.tenants,
            &self.tenant,
            broadcast::Sender::receiver_count,
        );
    }
}

/// A stream's watch on its user's record; the registry entry goes when the user's last watch does.
pub struct UserWatch {
    /// A stream rather than `Receiver::changed()`: its wait stays registered between polls, where a
    /// `changed()` future made per poll took and released the watch's lock every time a stream of
    /// that user woke for a frame.
    changes: WatchStream<u64>,
    username: String,
    fanout: Arc<Fanout>,
}

impl UserWatch {
    /// Completes with true when the user's record changes, false when the registry is gone.
    pub async fn changed(&mut self) -> bool {
        self.changes.next().await.is_some()
    }
}

impl Drop for UserWatch {
    fn drop(&mut self) {
        forget_if_last(&self.fanout.users, &self.username, watch::Sender::receiver_count);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn a_tenant_channel_and_a_user_watch_go_with_their_last_subscriber() {
        let fanout = Arc::new(Fanout::new(8));
        let first = fanout.subscribe("t");
        let second = fanout.subscribe("t");
        let watch = fanout.watch_user("ann");
        assert_eq!(fanout.live_tenants(), 1);
        drop(first);
        assert_eq!(fanout.live_tenants(), 1, "one subscriber left");
        drop(second);
        assert_eq!(
            fanout.live_tenants(),
            0,
            "no ring kept for a tenant nobody watches"
        );
        drop(watch);
        assert!(fanout.users.lock().unwrap().is_empty());
    }

    #[test]
    fn a_frame_tells_its_event_name() {
        let event = Event::from_new(
            crate::model::NewEvent {
                tenant_name: "t".into(),
                username: "u".into(),
                event: "a:b é".into(),
                data: serde_json::json!({"x": "event:no\n"}),
                timestamp: 0,
                reads: Vec::new(),
            },
            7,
        );
        assert_eq!(Frame::render(&event).event_name(), "a:b é");
    }

    #[tokio::test]
    async fn a_user_change_wakes_only_that_users_watch() {
        let fanout = Arc::new(Fanout::new(8));
        let mut ann = fanout.watch_user("ann");
        let mut bob = fanout.watch_user("bob");
        fanout.user_changed("ann");
        assert_eq!(ann.changed().now_or_never(), Some(true));
        assert_eq!(bob.changed().now_or_never(), None);
        fanout.user_changed("bob");
        assert_eq!(
            bob.changed().now_or_never(),
            Some(true),
            "a pending wait sees the change"
        );
    }
}
