//! Live fan-out: broadcast channels carrying each committed event as its SSE frame, rendered once
//! and shared by every subscriber it reaches, and one watch per user with open streams, bumped
//! when that user changes (revoked, moved, new password) so that only their streams re-check.
//! Each tenant's channels are indexed by the names and prefixes their streams asked for
//! (`routes`), so an event costs the streams it reaches, not the streams the tenant has.
//! A slow receiver never slows a publisher: it lags, and its stream catches up from the store.

mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{broadcast, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;

use self::routes::TenantRoutes;
use crate::filter::EventFilter;
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
    /// Frames an unfiltered subscriber may fall behind by before it must catch up from the store.
    live_buffer: usize,
    /// The same for a filtered channel: a sixteenth, as it carries a share of the tenant's events
    /// and a tenant may have thousands of them (each buffer slot is allocated up front).
    filtered_buffer: usize,
    /// tenant name → its live channels; created by the first subscriber, removed with the last.
    tenants: Mutex<HashMap<String, TenantRoutes>>,
    /// username → change counter; present only while that user has an open stream.
    users: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Fanout {
    pub fn new(live_buffer: usize) -> Self {
        let live_buffer = live_buffer.max(1);
        Self {
            live_buffer,
            filtered_buffer: (live_buffer / 16).max(16).min(live_buffer),
            tenants: Mutex::default(),
            users: Mutex::default(),
        }
    }

    /// Joins the live frames of `tenant` that `filter` lets through. Join before reading the
    /// replay from the store, so that nothing committed in between is missed.
    pub fn subscribe(self: &Arc<Self>, tenant: &str, filter: &EventFilter) -> LiveFeed {
        let mut tenants = self.tenants.lock().expect("fanout lock");
        let routes = tenants.entry(tenant.to_owned()).or_default();
        let buffer = if filter.is_everything() {
            self.live_buffer
        } else {
            self.filtered_buffer
        };
        let channel = routes.channel(filter, buffer);
        LiveFeed {
            receiver: channel.sender.subscribe(),
            tenant: tenant.to_owned(),
            filter: filter.clone(),
            fanout: self.clone(),
        }
    }

    /// Hands committed events, in commit order, to the live subscribers they reach, if any. Each
    /// frame is rendered once here, whatever the number of subscribers, and only if one is reached.
    pub fn publish<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let tenants = self.tenants.lock().expect("fanout lock");
        for event in events {
            if let Some(routes) = tenants.get(&event.tenant_name) {
                routes.publish(&event.event, event.seq, || Frame::render(event));
            }
        }
    }

    /// Whether `tenant` has a live stream on this node.
    pub fn has_streams(&self, tenant: &str) -> bool {
        self.tenants.lock().expect("fanout lock").contains_key(tenant)
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

    /// Live channels of `tenant` (for tests and diagnostics).
    pub fn live_channels(&self, tenant: &str) -> usize {
        let tenants = self.tenants.lock().expect("fanout lock");
        tenants.get(tenant).map_or(0, TenantRoutes::channel_count)
    }
}

/// A subscriber's place in a live channel; the channel goes when its last feed does, and the
/// tenant's routes with their last channel.
pub struct LiveFeed {
    pub receiver: broadcast::Receiver<Frame>,
    tenant: String,
    filter: EventFilter,
    fanout: Arc<Fanout>,
}

impl LiveFeed {
    /// The names this feed carries.
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        let mut tenants = self.fanout.tenants.lock().expect("fanout lock");
        let Some(routes) = tenants.get_mut(&self.tenant) else {
            return;
        };
        // This feed's receiver still counts until after `drop` returns, hence `<= 1`.
        if routes.receivers(&self.filter) <= 1 {
            routes.remove(&self.filter);
            if routes.is_empty() {
                tenants.remove(&self.tenant);
            }
        }
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
        let mut users = self.fanout.users.lock().expect("fanout lock");
        // This watch still counts until after `drop` returns, hence `<= 1`.
        if users
            .get(&self.username)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            users.remove(&self.username);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn a_tenant_channel_and_a_user_watch_go_with_their_last_subscriber() {
        let fanout = Arc::new(Fanout::new(8));
        let first = fanout.subscribe("t", &EventFilter::default());
        let second = fanout.subscribe("t", &EventFilter::default());
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

    fn event(name: &str, seq: u64) -> Event {
        let new = crate::model::NewEvent {
            tenant_name: "t".into(),
            username: "u".into(),
            event: name.into(),
            data: serde_json::json!(seq),
            timestamp: 0,
            reads: Vec::new(),
            idempotency_key: None,
            tenant_max_bytes: 0,
        };
        Event::from_new(new, seq)
    }

    /// The sequences waiting in `feed`.
    fn received(feed: &mut LiveFeed) -> Vec<u64> {
        std::iter::from_fn(|| feed.receiver.try_recv().ok().map(|frame| frame.seq)).collect()
    }

    #[test]
    fn an_event_reaches_the_channels_whose_filter_it_passes_once_each() {
        let fanout = Arc::new(Fanout::new(64));
        let subscribe = |filter: &str| fanout.subscribe("t", &EventFilter::parse(filter).unwrap());
        let mut everything = subscribe("*");
        let mut room1 = subscribe("room.1.*");
        let mut room1_again = subscribe("room.1.*");
        let mut room2_and_profile = subscribe("profile,room.2.*");
        let mut overlapping = subscribe("room.*,room.1.msg,room.1.*");
        let mut other_tenant = fanout.subscribe("u", &EventFilter::default());
        assert_eq!(fanout.live_channels("t"), 4, "equal filters share a channel");
        let events = [
            event("room.1.msg", 1),
            event("room.2.msg", 2),
            event("profile", 3),
            event("room.10.msg", 4),
            event("rooms", 5),
        ];
        fanout.publish(&events);
        assert_eq!(received(&mut everything), [1, 2, 3, 4, 5]);
        assert_eq!(received(&mut room1), [1]);
        assert_eq!(received(&mut room1_again), [1]);
        assert_eq!(received(&mut room2_and_profile), [2, 3]);
        assert_eq!(received(&mut overlapping), [1, 2, 4], "once each");
        assert_eq!(received(&mut other_tenant), [] as [u64; 0]);
        drop((room1, room1_again, room2_and_profile, overlapping, other_tenant));
        assert_eq!(fanout.live_channels("t"), 1);
        fanout.publish([&event("room.1.msg", 6)]);
        assert_eq!(received(&mut everything), [6]);
        drop(everything);
        assert_eq!(fanout.live_tenants(), 0);
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
                idempotency_key: None,
                tenant_max_bytes: 0,
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
