//! Forgetting, on request: a user (its record at once, so its credentials and streams end on every
//! node; with `erase_events`, every event it inserted), or a whole tenant (every user, every event,
//! its limits override). Erased events are gone from every read (stream replay, resume, history
//! pages, guests' `latest`) and from backups taken afterwards; see `EventLog::erase` for when the
//! bytes leave the live storage.
//!
//! The user goes before its events, so nothing new of it is judged after the erasure starts. An
//! insert already past authentication may still commit behind the erasure's scan: asking again
//! (`erase_events` on a user already deleted) erases what is left.

use std::sync::Arc;

use crate::accounts::{AccountError, Accounts};
use crate::event_log::{Erase, EventLog};
use crate::storage::StorageError;
use crate::user_directory::UserDirectory;

/// What a deletion removed.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub users: u64,
    pub events: u64,
}

pub struct Erasure {
    users: Arc<dyn UserDirectory>,
    events: Arc<dyn EventLog>,
}

impl Erasure {
    pub fn new(users: Arc<dyn UserDirectory>, events: Arc<dyn EventLog>) -> Self {
        Self { users, events }
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
            removed.events = self.events.erase(Erase::User(username.to_owned())).await?;
            tracing::info!(username, events = removed.events, "user's events erased");
        }
        Ok(removed)
    }

    /// Deletes every user of `tenant`, then erases its events. A user created in the tenant while
    /// this runs may survive it: the caller runs it again.
    pub async fn delete_tenant(&self, accounts: &Accounts, tenant: &str) -> Result<Removed, StorageError> {
        let mut removed = Removed::default();
        for user in self.users.list().await? {
            if user.tenant_name != tenant {
                continue;
            }
            match accounts.delete(&user.username).await {
                Ok(_) => removed.users += 1,
                // Deleted meanwhile by someone else: gone all the same.
                Err(AccountError::NotFound) => {}
                Err(AccountError::Storage(error)) => return Err(error),
                Err(other) => return Err(StorageError::backend(other)),
            }
        }
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
