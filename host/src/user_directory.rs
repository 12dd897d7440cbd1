//! The user directory seam: users and the identity-wide values (the biscuit root key), whichever
//! store is behind it (LMDB on one node, NATS JetStream key-value in a cluster; chosen in `run`).
//!
//! Whoever implements it tells the fan-out about every change to a user (`UserChanged`), on every
//! node, so that the user's open streams re-check it.

use std::sync::Arc;

use crate::model::User;
use crate::storage::StorageResult;

/// Called with the username of every user record that changed.
pub type UserChanged = Arc<dyn Fn(&str) + Send + Sync>;

/// A change to a user record; it may decline by returning false. It may run more than once (a
/// compare-and-set that lost a race runs it again on the newer record), so it must not move state
/// out of its captures.
pub type UserChange = Box<dyn Fn(&mut User) -> bool + Send + Sync>;

#[async_trait::async_trait]
pub trait UserDirectory: Send + Sync {
    /// The user named `username`; a name that could never have been stored is simply unknown.
    async fn get(&self, username: &str) -> StorageResult<Option<User>>;

    /// The user as the store holds it now. In a cluster `get` answers from this node's copy,
    /// which hears of another node's change a few milliseconds late; this reads the leader.
    async fn get_latest(&self, username: &str) -> StorageResult<Option<User>> {
        self.get(username).await
    }

    async fn list(&self) -> StorageResult<Vec<User>>;

    /// Stores `user` unless its username is taken, atomically; returns whether it was stored.
    async fn create(&self, user: User) -> StorageResult<bool>;

    /// Applies `change` to the current record and stores it, unless `change` declines; compare-and-
    /// set, so no concurrent change is lost. `None`: unknown user, or declined.
    async fn update_if(&self, username: &str, change: UserChange) -> StorageResult<Option<User>>;

    /// Removes the user's record (in a cluster, every revision of it, old password hashes
    /// included); answers the record removed, `None` for an unknown user. Every node's streams of
    /// the user hear of it as of any change.
    async fn delete(&self, username: &str) -> StorageResult<Option<User>>;

    /// The value stored under `key`, or `init` stored there first (by whichever caller was first).
    async fn shared_value(&self, key: &str, init: Vec<u8>) -> StorageResult<Vec<u8>>;

    /// The value stored under `key`, if any (read from the leader in a cluster: a value set on
    /// another node is seen once that set was answered).
    async fn value(&self, key: &str) -> StorageResult<Option<Vec<u8>>>;

    /// Stores `value` under `key`, replacing what was there (the last write wins).
    async fn set_value(&self, key: &str, value: Vec<u8>) -> StorageResult<()>;

    /// Stores `value` under `key` only if what is there now is `expected` (`None`: nothing, or an
    /// empty value); a compare-and-set that contends only with writers of `key`. Answers whether
    /// it stored.
    async fn replace_value(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> StorageResult<bool>;
}

impl dyn UserDirectory {
    /// `update_if` with a change that never declines.
    pub async fn update(
        &self,
        username: &str,
        change: impl Fn(&mut User) + Send + Sync + 'static,
    ) -> StorageResult<Option<User>> {
        self.update_if(
            username,
            Box::new(move |user| {
                change(user);
                true
            }),
        )
        .await
    }
}
