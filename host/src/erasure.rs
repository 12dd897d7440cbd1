//! Forgetting, on request: a user (its record at once, so its credentials and streams end on every
//! node; with `erase_events`, every event it inserted), or a whole tenant (every user, every event,
//! its limits override). Erased events are gone from every read (stream replay, resume, history
//! pages, guests' `latest`) and from backups taken afterwards; see `EventLog::erase` for when the
//! bytes leave the live storage.
//!
//! The user goes before its events, so nothing new of it is judged after the erasure starts. An
//! insert that was past authentication by then would commit behind the erasure's scan, so each
//! insert is counted here while it runs (`insert_begins`) and reads its user again once counted:
//! the erasure waits for the inserts it counts (up to `DRAIN_TIMEOUT`), and one counted later finds
//! the user gone. In a cluster only this node's inserts are counted: an insert on another node
//! that was past authentication when the user went may still commit behind the scan; asking again
//! (`erase_events` on a user already deleted) erases what is left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::accounts::{AccountError, Accounts};
use crate::event_log::{Erase, EventLog};
use crate::model::User;
use crate::storage::StorageError;
use crate::user_directory::UserDirectory;

/// Longest wait of an erasure for inserts under way by the users it removes: a guest's judgement
/// is bounded well below it. Past it the erasure goes on (and says so).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Inserts under way, per username.
#[derive(Default)]
struct InFlight {
    counts: Mutex<HashMap<String, usize>>,
    /// Told whenever a count reaches 0.
    drained: Notify,
}

impl InFlight {
    fn busy(&self, usernames: &[String]) -> bool {
        let counts = self.counts.lock().expect("in-flight lock");
        usernames.iter().any(|username| counts.contains_key(username))
    }

    /// Whether every insert of `usernames` under way ended within `DRAIN_TIMEOUT`.
    async fn drained(&self, usernames: &[String]) -> bool {
        let waited = tokio::time::timeout(DRAIN_TIMEOUT, async {
            loop {
                let notified = self.drained.notified();
                if !self.busy(usernames) {
                    return;
                }
                notified.await;
            }
        });
        waited.await.is_ok()
    }
}

/// Counts one insert as under way until dropped.
pub struct InsertUnderWay<'a> {
    in_flight: &'a InFlight,
    username: String,
}

impl Drop for InsertUnderWay<'_> {
    fn drop(&mut self) {
        let mut counts = self.in_flight.counts.lock().expect("in-flight lock");
        if let Some(count) = counts.get_mut(&self.username) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.username);
                self.in_flight.drained.notify_waiters();
            }
        }
    }
}

/// What a deletion removed.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub users: u64,
    pub events: u64,
}

pub struct Erasure {
    users: Arc<dyn UserDirectory>,
    events: Arc<dyn EventLog>,
    in_flight: InFlight,
}

impl Erasure {
    pub fn new(users: Arc<dyn UserDirectory>, events: Arc<dyn EventLog>) -> Self {
        Self {
            users,
            events,
            in_flight: InFlight::default(),
        }
    }

    /// Counts an insert by `user` (authenticated moments ago) as under way until the answer is
    /// dropped, then reads the user again: `None` if it was deleted (or replaced by a new user of
    /// the name) since, and the insert must not go on.
    pub async fn insert_begins(&self, user: &User) -> Result<Option<InsertUnderWay<'_>>, StorageError> {
        let under_way = {
            let mut counts = self.in_flight.counts.lock().expect("in-flight lock");
            *counts.entry(user.username.clone()).or_default() += 1;
            InsertUnderWay {
                in_flight: &self.in_flight,
                username: user.username.clone(),
            }
        };
        let current = self.users.get(&user.username).await?;
        Ok(current
            .is_some_and(|current| current.id == user.id)
            .then_some(under_way))
    }

    /// Waits for the inserts under way by `usernames` (already deleted) before their events are
    /// erased.
    async fn wait_for_inserts(&self, usernames: &[String]) {
        if !self.in_flight.drained(usernames).await {
            tracing::warn!(
                ?usernames,
                "inserts still under way after {DRAIN_TIMEOUT:?}; erasing without them"
            );
        }
    }

    /// Deletes `username` through `accounts`, then with `erase_events` its events in every tenant.
    pub async fn delete_user(
        &self,
        accounts: &Accounts,
        username: &str,
        erase_events: bool,
    ) -> Result<Removed, AccountError> {
        let mut removed = Removed::default();
        match accounts.delete(username).await {
            Ok(_) => removed.users = 1,
            // Gone already, as after an erasure that failed half-way: erasing again finishes it.
            Err(AccountError::NotFound) if erase_events => {}
            Err(error) => return Err(error),
        }
        if erase_events {
            self.wait_for_inserts(&[username.to_owned()]).await;
            removed.events = self.events.erase(Erase::User(username.to_owned())).await?;
            tracing::info!(username, events = removed.events, "user's events erased");
        }
        Ok(removed)
    }

    /// Deletes every user of `tenant`, then erases its events. A user created in the tenant while
    /// this runs may survive it: the caller runs it again.
    pub async fn delete_tenant(&self, accounts: &Accounts, tenant: &str) -> Result<Removed, StorageError> {
        let mut removed = Removed::default();
        let mut deleted = Vec::new();
        for user in self.users.list().await? {
            if user.tenant_name != tenant {
                continue;
            }
            deleted.push(user.username.clone());
            match accounts.delete(&user.username).await {
                Ok(_) => removed.users += 1,
                // Deleted meanwhile by someone else: gone all the same.
                Err(AccountError::NotFound) => {}
                Err(AccountError::Storage(error)) => return Err(error),
                Err(other) => return Err(StorageError::backend(other)),
            }
        }
        self.wait_for_inserts(&deleted).await;
        removed.events = self.events.erase(Erase::Tenant(tenant.to_owned())).await?;
        tracing::info!(
            tenant,
            users = removed.users,
            events = removed.events,
            "tenant deleted"
        );
        Ok(removed)
    }
}
