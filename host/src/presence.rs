//! Presence: which users of a tenant have at least one open stream, on any node.
//!
//! Each node counts its own streams per user (two tabs count twice; the user leaves when the last
//! closes). Changes are coalesced: a tenant's published set changes at most once per `COALESCE`,
//! and a presence stream turns each change into at most one join and one leave frame, each
//! listing users. 10,000 users connecting at once cost each watching stream a few frames a
//! second, not 10,000. A user whose last stream closed leaves after `LEAVE_GRACE` unless a stream
//! of theirs comes back (a page reload; a tab on another node whose record was not read yet).
//!
//! With a store shared by several nodes (cluster mode), each node writes its users to the user
//! directory's values (`presence/<node>`) when they change and at least every `HEARTBEAT`, and
//! reads every node's record each `SYNC`; a record not written for `EXPIRY` (its node died)
//! no longer counts, so a node killed with kill -9 has its users leave within about
//! `EXPIRY + SYNC + COALESCE`. On LMDB nothing is written: one process holds every stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::storage::StorageResult;
use crate::user_directory::UserDirectory;

/// The snapshot frame's name, under the prefix reserved for Broker's own frames (no insert can
/// forge it); the scope that shows presence with `--enforce_scopes` is `broker.presence:get`.
pub const PRESENCE_EVENT: &str = "broker.presence";
pub const JOIN_EVENT: &str = "broker.presence.join";
pub const LEAVE_EVENT: &str = "broker.presence.leave";

/// A tenant's set changes at most this often.
pub const COALESCE: Duration = Duration::from_millis(250);
/// Cluster: how often a node reads the other nodes' records.
pub const SYNC: Duration = Duration::from_secs(1);
/// Cluster: a node writes its record at least this often, changed or not.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// Cluster: a record older than this is a dead node's.
pub const EXPIRY: Duration = Duration::from_secs(10);
/// A user gone from a tenant's set leaves it only after this long, if it has not come back: a
/// page reload, or a tab closed on one node just after another opened on a node whose record was
/// not read yet, is not a leave and a join.
pub const LEAVE_GRACE: Duration = Duration::from_secs(2);
/// Cluster: a dead node leaves the index after this long.
const FORGET_NODE: Duration = Duration::from_secs(600);

const INDEX: &str = "presence_nodes";

fn record_key(node: &str) -> String {
    format!("presence/{node}")
}

/// A tenant's users with an open stream, sorted.
pub type Users = Arc<BTreeSet<String>>;

/// What one node wrote: its users per tenant, and when.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct NodeRecord {
    at_ms: u64,
    tenants: BTreeMap<String, Vec<String>>,
}

#[derive(Default)]
struct Inner {
    /// This node's open streams: tenant → user → count.
    local: HashMap<String, HashMap<String, usize>>,
    /// The other nodes' fresh records (cluster mode).
    remote: HashMap<String, NodeRecord>,
    /// The sets presence streams watch, by tenant; dropped once nobody watches.
    published: HashMap<String, watch::Sender<Users>>,
    /// The local counts changed since this node last wrote its record.
    unwritten: bool,
    /// Users gone from a watched set, and since when: they leave it only after `LEAVE_GRACE`.
    absent_since: HashMap<(String, String), tokio::time::Instant>,
}

impl Inner {
    fn users(&self, tenant: &str) -> BTreeSet<String> {
        let mut users: BTreeSet<String> = self
            .local
            .get(tenant)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default();
        for record in self.remote.values() {
            if let Some(remote) = record.tenants.get(tenant) {
                users.extend(remote.iter().cloned());
            }
        }
        users
    }
}

pub struct Presence {
    inner: Mutex<Inner>,
    /// Wakes the publisher after a local change.
    changed: Notify,
    /// The shared store, in cluster mode.
    shared: Option<Arc<dyn UserDirectory>>,
    node: String,
    clock: Arc<Clock>,
}

/// One open stream counted in its user's presence; dropping it counts the stream out.
pub struct Joined {
    presence: Arc<Presence>,
    tenant: String,
    username: String,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.presence.leave(&self.tenant, &self.username);
    }
}

impl Presence {
    /// Starts publishing (and, with `shared`, exchanging records with the other nodes) until
    /// `shutdown`.
    pub fn start(
        shared: Option<Arc<dyn UserDirectory>>,
        clock: Arc<Clock>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let presence = Arc::new(Self {
            inner: Mutex::default(),
            changed: Notify::new(),
            shared,
            node: uuid::Uuid::new_v4().simple().to_string(),
            clock,
        });
        tokio::spawn(presence.clone().run(shutdown));
        presence
    }

    /// Counts one open stream of `username` in `tenant` until the answer is dropped.
    pub fn join(self: &Arc<Self>, tenant: &str, username: &str) -> Joined {
        let mut inner = self.inner.lock().unwrap();
        let users = inner.local.entry(tenant.to_owned()).or_default();
        *users.entry(username.to_owned()).or_default() += 1;
        inner.unwritten = true;
        drop(inner);
        self.changed.notify_one();
        Joined {
            presence: self.clone(),
            tenant: tenant.to_owned(),
            username: username.to_owned(),
        }
    }

    fn leave(&self, tenant: &str, username: &str) {
        let mut inner = self.inner.lock().unwrap();
        let Some(users) = inner.local.get_mut(tenant) else {
            return;
        };
        if let Some(count) = users.get_mut(username) {
            *count -= 1;
            if *count == 0 {
                users.remove(username);
            }
        }
        if users.is_empty() {
            inner.local.remove(tenant);
        }
        inner.unwritten = true;
        drop(inner);
        self.changed.notify_one();
    }

    /// `tenant`'s users with an open stream now (on this node, and as last read from the others).
    pub fn users(&self, tenant: &str) -> BTreeSet<String> {
        self.inner.lock().unwrap().users(tenant)
    }

    /// The set of `tenant`'s users as it changes, coalesced.
    pub fn watch(&self, tenant: &str) -> watch::Receiver<Users> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(sender) = inner.published.get(tenant) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Arc::new(inner.users(tenant)));
        inner.published.insert(tenant.to_owned(), sender);
        receiver
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // None: never written (an Instant cannot go below the machine's boot).
        let mut last_write: Option<tokio::time::Instant> = None;
        // A leave waiting out its grace: publish again soon, even with nothing else new.
        let mut waiting = false;
        loop {
            let timeout = match (self.shared.is_some(), waiting) {
                (_, true) => LEAVE_GRACE / 4,
                (true, false) => SYNC,
                (false, false) => Duration::from_secs(3600),
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(timeout) => {}
            }
            // Changes that come within the window are published together.
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(COALESCE) => {}
            }
            // Local changes first: a slow store must not hold them back.
            waiting = self.publish();
            if let Some(shared) = &self.shared {
                let unwritten = std::mem::take(&mut self.inner.lock().unwrap().unwritten);
                if unwritten || last_write.is_none_or(|at| at.elapsed() >= HEARTBEAT) {
                    match self.write_record(&**shared).await {
                        Ok(()) => last_write = Some(tokio::time::Instant::now()),
                        Err(error) => {
                            self.inner.lock().unwrap().unwritten = true;
                            tracing::warn!(%error, "could not write this node's presence; trying again");
                        }
                    }
                }
                if let Err(error) = self.read_records(&**shared, last_write.is_some()).await {
                    tracing::warn!(%error, "could not read the other nodes' presence; trying again");
                }
                // Records are dropped as they age even while the store cannot be read: a node
                // that died during an outage does not stay present.
                let now = self.clock.now_millis();
                self.inner
                    .lock()
                    .unwrap()
                    .remote
                    .retain(|_, record| fresh(record, now));
                waiting = self.publish();
            }
        }
        // Stopping: this node's users leave the others' view now, not after EXPIRY.
        if let Some(shared) = &self.shared {
            let gone = NodeRecord::default();
            let _ = shared.set_value(&record_key(&self.node), encode(&gone)).await;
        }
    }

    /// Sends each watched tenant's set if it changed; forgets the sets nobody watches.
    /// Sends each watched tenant's set if it changed (a user gone is kept in it for
    /// `LEAVE_GRACE`); forgets the sets nobody watches. Answers whether a leave is still waiting.
    fn publish(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        inner.published.retain(|_, sender| sender.receiver_count() > 0);
        let published = &inner.published;
        inner
            .absent_since
            .retain(|(tenant, _), _| published.contains_key(tenant));
        let mut waiting = false;
        let tenants: Vec<String> = inner.published.keys().cloned().collect();
        for tenant in tenants {
            let present = inner.users(&tenant);
            let shown = inner.published[&tenant].borrow().clone();
            let mut users = present.clone();
            for user in shown.iter() {
                let key = (tenant.clone(), user.clone());
                if present.contains(user) {
                    inner.absent_since.remove(&key);
                    continue;
                }
                let since = *inner.absent_since.entry(key.clone()).or_insert(now);
                if now.duration_since(since) < LEAVE_GRACE {
                    users.insert(user.clone());
                    waiting = true;
                } else {
                    inner.absent_since.remove(&key);
                }
            }
            inner.published[&tenant].send_if_modified(|current| {
                let changed = **current != users;
                if changed {
                    *current = Arc::new(users);
                }
                changed
            });
        }
        waiting
    }

    async fn write_record(&self, shared: &dyn UserDirectory) -> StorageResult<()> {
        let record = {
            let inner = self.inner.lock().unwrap();
            NodeRecord {
                at_ms: self.clock.now_millis(),
                tenants: inner
                    .local
                    .iter()
                    .map(|(tenant, users)| (tenant.clone(), users.keys().cloned().collect()))
                    .collect(),
            }
        };
        shared.set_value(&record_key(&self.node), encode(&record)).await
    }

    /// Reads every other node's record; keeps the fresh ones, drops long-dead nodes from the
    /// index, and lists this node there once `written` (its record is in the store).
    async fn read_records(&self, shared: &dyn UserDirectory, written: bool) -> StorageResult<()> {
        let nodes = read_index(shared).await?.1;
        let unlisted = written && !nodes.contains(&self.node);
        let now = self.clock.now_millis();
        let mut current = HashMap::new();
        let mut dead = BTreeSet::new();
        for node in nodes.iter().filter(|node| **node != self.node) {
            let record: NodeRecord = match shared.value(&record_key(node)).await? {
                Some(bytes) if !bytes.is_empty() => serde_json::from_slice(&bytes).unwrap_or_default(),
                _ => NodeRecord::default(),
            };
            let age = Duration::from_millis(now.saturating_sub(record.at_ms));
            if fresh(&record, now) {
                current.insert(node.clone(), record);
            } else if age > FORGET_NODE {
                dead.insert(node.clone());
            }
        }
        self.inner.lock().unwrap().remote = current;
        if unlisted || !dead.is_empty() {
            self.change_index(shared, |nodes| {
                let before = nodes.clone();
                nodes.retain(|node| !dead.contains(node));
                if written {
                    nodes.insert(self.node.clone());
                }
                *nodes != before
            })
            .await?;
        }
        Ok(())
    }

    /// Changes the index of nodes by compare-and-set; `change` answers whether it changed it.
    async fn change_index(
        &self,
        shared: &dyn UserDirectory,
        change: impl Fn(&mut BTreeSet<String>) -> bool,
    ) -> StorageResult<()> {
        loop {
            let (raw, mut nodes) = read_index(shared).await?;
            if !change(&mut nodes) {
                return Ok(());
            }
            if shared.replace_value(INDEX, raw, encode(&nodes)).await? {
                return Ok(());
            }
        }
    }
}

/// Whether a node's record was written within `EXPIRY` of `now_ms`.
fn fresh(record: &NodeRecord, now_ms: u64) -> bool {
    record.at_ms > 0 && Duration::from_millis(now_ms.saturating_sub(record.at_ms)) < EXPIRY
}

async fn read_index(shared: &dyn UserDirectory) -> StorageResult<(Option<Vec<u8>>, BTreeSet<String>)> {
    let raw = shared.value(INDEX).await?;
    let nodes = raw
        .as_deref()
        .filter(|bytes| !bytes.is_empty())
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .unwrap_or_default();
    Ok((raw, nodes))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("presence records serialize")
}

/// The frame of a whole set: `event:broker.presence` with `{"users": [...]}`, no `id:` (the
/// client's last event id stays its own).
pub fn snapshot_frame(users: &BTreeSet<String>) -> bytes::Bytes {
    frame(PRESENCE_EVENT, users.iter())
}

/// The join and leave frames from `before` to `after` (none where nothing changed).
pub fn change_frames(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<bytes::Bytes> {
    let mut frames = Vec::new();
    let joined: Vec<&String> = after.difference(before).collect();
    if !joined.is_empty() {
        frames.push(frame(JOIN_EVENT, joined.into_iter()));
    }
    let left: Vec<&String> = before.difference(after).collect();
    if !left.is_empty() {
        frames.push(frame(LEAVE_EVENT, left.into_iter()));
    }
    frames
}

fn frame<'a>(name: &str, users: impl Iterator<Item = &'a String>) -> bytes::Bytes {
    let data = serde_json::json!({ "users": users.collect::<Vec<_>>() });
    bytes::Bytes::from(format!("event:{name}\ndata:{data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_change_is_at_most_one_join_and_one_leave_frame() {
        let frames = change_frames(&set(&["ann", "bob"]), &set(&["bob", "cy", "dee"]));
        assert_eq!(
            frames,
            vec![
                bytes::Bytes::from("event:broker.presence.join\ndata:{\"users\":[\"cy\",\"dee\"]}\n\n"),
                bytes::Bytes::from("event:broker.presence.leave\ndata:{\"users\":[\"ann\"]}\n\n"),
            ]
        );
        assert!(change_frames(&set(&["ann"]), &set(&["ann"])).is_empty());
    }

    #[tokio::test]
    async fn a_user_leaves_when_the_last_of_its_streams_closes() {
        let presence = Presence::start(None, Arc::new(Clock::default()), CancellationToken::new());
        let first = presence.join("t", "ann");
        let second = presence.join("t", "ann");
        let other = presence.join("u", "bob");
        assert_eq!(presence.users("t"), set(&["ann"]));
        drop(first);
        assert_eq!(presence.users("t"), set(&["ann"]));
        drop(second);
        assert!(presence.users("t").is_empty());
        assert_eq!(presence.users("u"), set(&["bob"]));
        drop(other);
    }
}
