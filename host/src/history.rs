//! History pages (`GET /events`): what a user may read of its tenant's past, a page at a time,
//! newest first below an id or oldest first above one. The same filter syntax as a stream, and the
//! same scopes: a page carries what the stream with that filter would.

use std::sync::Arc;

use crate::auth::Identity;
use crate::auth::scopes::{self, Operation};
use crate::event_log::{EventLog, HistoryPage, PageStart};
use crate::filter::EventFilter;
use crate::storage::StorageError;

/// Most events a page holds, and how many it holds unless asked.
pub const MAX_LIMIT: usize = 500;
pub const DEFAULT_LIMIT: usize = 100;
/// A page stops once its events' stored records reach this many bytes (it holds at least one).
pub const MAX_PAGE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// `--enforce_scopes` and the user holds no `get` scope at all.
    #[error("a scope E:get (or *:get) is needed to read events")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] StorageError),
}

/// The history path: the event log and one flag.
pub struct History {
    events: Arc<dyn EventLog>,
    /// `--enforce_scopes`: a page carries only the names the caller's `get` scopes cover.
    enforce_scopes: bool,
}

impl History {
    pub fn new(events: Arc<dyn EventLog>, enforce_scopes: bool) -> Self {
        Self {
            events,
            enforce_scopes,
        }
    }

    /// A page of `identity`'s tenant's events that `filter` and its scopes let through; `limit`
    /// is held to 1..=`MAX_LIMIT`.
    pub async fn page(
        &self,
        identity: &Identity,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        let readable = if self.enforce_scopes {
            let scopes = identity.user.scope_list();
            if !scopes::allows_any(scopes, Operation::Get) {
                return Err(HistoryError::Forbidden);
            }
            scopes::receivable(filter, scopes)
        } else {
            filter.clone()
        };
        self.tenant_page(&identity.user.tenant_name, &readable, start, limit)
            .await
    }

    /// A page of `tenant`'s events that `filter` lets through, for the admin console.
    pub async fn tenant_page(
        &self,
        tenant: &str,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        Ok(self
            .events
            .history(tenant, filter, start, limit, MAX_PAGE_BYTES)
            .await?)
    }
}
