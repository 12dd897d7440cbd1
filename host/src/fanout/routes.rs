//! One tenant's live channels, indexed by what their streams asked for, so that publishing an
//! event costs a lookup of its name and a send to each channel it reaches, not a visit to every
//! stream of the tenant. Streams with the same filter (after narrowing to their scopes) share one
//! channel; a stream without a filter shares the tenant's "everything" channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use super::Frame;
use crate::filter::EventFilter;

/// One live channel and the sequence of the last frame sent on it: a filter whose items overlap
/// (`room.*,room.1`) reaches its channel twice for one event, and sends once.
pub(super) struct Channel {
    pub(super) sender: broadcast::Sender<Frame>,
    last_seq: AtomicU64,
}

#[derive(Default)]
pub(super) struct TenantRoutes {
    /// Every channel, by the filter its streams share.
    channels: HashMap<EventFilter, Arc<Channel>>,
    /// The channel of the streams without a filter, if any.
    everything: Option<Arc<Channel>>,
    /// Channels by an exact name their filter holds.
    exact: HashMap<String, Vec<Arc<Channel>>>,
    /// Channels by a prefix their filter holds.
    prefixes: HashMap<String, Vec<Arc<Channel>>>,
    /// The lengths of the prefixes in `prefixes`, with how many have each: an event's name is
    /// looked up once per length in use, not once per byte.
    prefix_lengths: BTreeMap<usize, usize>,
}

impl TenantRoutes {
    /// The channel for `filter`, made and indexed on first use with room for `buffer` frames.
    pub(super) fn channel(&mut self, filter: &EventFilter, buffer: usize) -> Arc<Channel> {
        if let Some(channel) = self.channels.get(filter) {
            return channel.clone();
        }
        let channel = Arc::new(Channel {
            sender: broadcast::channel(buffer).0,
            last_seq: AtomicU64::new(0),
        });
        if filter.is_everything() {
            self.everything = Some(channel.clone());
        }
        let (exact, prefixes) = filter.items();
        for name in exact {
            self.exact
                .entry(name.to_owned())
                .or_default()
                .push(channel.clone());
        }
        for prefix in prefixes {
            self.prefixes
                .entry(prefix.to_owned())
                .or_default()
                .push(channel.clone());
            *self.prefix_lengths.entry(prefix.len()).or_default() += 1;
        }
        self.channels.insert(filter.clone(), channel.clone());
        channel
    }

    /// Forgets `filter`'s channel and its index entries.
    pub(super) fn remove(&mut self, filter: &EventFilter) {
        let Some(channel) = self.channels.remove(filter) else {
            return;
        };
        if filter.is_everything() {
            self.everything = None;
        }
        let (exact, prefixes) = filter.items();
        for name in exact {
            unlist(&mut self.exact, name, &channel);
        }
        for prefix in prefixes {
            unlist(&mut self.prefixes, prefix, &channel);
            if let Some(count) = self.prefix_lengths.get_mut(&prefix.len()) {
                *count -= 1;
                if *count == 0 {
                    self.prefix_lengths.remove(&prefix.len());
                }
            }
        }
    }

    /// Sends event `seq`, named `name`, on every channel whose filter lets it through, once each;
    /// its frame is rendered only if one does.
    pub(super) fn publish(&self, name: &str, seq: u64, render: impl FnOnce() -> Frame) {
        let mut render = Some(render);
        let mut frame: Option<Frame> = None;
        let mut send = |channel: &Arc<Channel>| {
            if channel.last_seq.swap(seq, Ordering::Relaxed) != seq {
                let frame = frame.get_or_insert_with(|| render.take().expect("rendered once")());
                let _ = channel.sender.send(frame.clone());
            }
        };
        self.everything.iter().for_each(&mut send);
        self.exact.get(name).into_iter().flatten().for_each(&mut send);
        for &length in self.prefix_lengths.keys() {
            if length > name.len() {
                break;
            }
            if let Some(prefix) = name.get(..length) {
                self.prefixes
                    .get(prefix)
                    .into_iter()
                    .flatten()
                    .for_each(&mut send);
            }
        }
    }

    /// Receivers of `filter`'s channel (0 when it has none).
    pub(super) fn receivers(&self, filter: &EventFilter) -> usize {
        self.channels
            .get(filter)
            .map_or(0, |channel| channel.sender.receiver_count())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Channels open (for tests and diagnostics).
    pub(super) fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

/// Takes `channel` out of `key`'s list, and the list out of `index` when it empties.
fn unlist(index: &mut HashMap<String, Vec<Arc<Channel>>>, key: &str, channel: &Arc<Channel>) {
    if let Some(list) = index.get_mut(key) {
        list.retain(|listed| !Arc::ptr_eq(listed, channel));
        if list.is_empty() {
            index.remove(key);
        }
    }
}
