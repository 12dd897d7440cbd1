//! History pages (`GET /events`): what a user may read of its tenant's past, a page at a time,
//! newest first below an id or oldest first above one. The same filter syntax as a stream, and the
//! same scopes: a page carries what the stream with that filter would.

use std::sync::Arc;

use crate::auth::Identity;
use crate::auth::scopes::{self, Operation};
use crate::event_log::{EventLog, HistoryPage, PageStart};
use crate::filter::EventFilter;
use crate::model::Event;
use crate::read_rule::{ReadAnswers, ReadRule, Reader};
use crate::storage::StorageError;

/// Most events a page holds, and how many it holds unless asked.
pub const MAX_LIMIT: usize = 500;
pub const DEFAULT_LIMIT: usize = 100;
/// A page stops once its events' stored records reach this many bytes (it holds at least one).
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// A page as the API answers it: its events, and the cursor of the following page (`None` at the
/// end), passed as the same parameter (`before` or `after`).
#[derive(Debug)]
pub struct Page {
    pub events: Vec<Event>,
    pub next: Option<u64>,
}

impl Page {
    /// The page of a store's answer: the next page starts after the last event read.
    fn of(page: HistoryPage) -> Self {
        let next = page
            .more
            .then(|| page.events.last().map(|event| event.seq))
            .flatten();
        Self {
            events: page.events,
            next,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// `--enforce_scopes` and the user holds no `get` scope at all.
    #[error("a scope E:get (or *:get) is needed to read events")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] StorageError),
}

/// The history path: the event log, the read rule and one flag.
pub struct History {
    events: Arc<dyn EventLog>,
    /// The tenants' read rules: a page holds only the names its reader may read.
    rules: Arc<dyn ReadRule>,
    /// `--enforce_scopes`: a page carries only the names the caller's `get` scopes cover.
    enforce_scopes: bool,
}

impl History {
    pub fn new(events: Arc<dyn EventLog>, rules: Arc<dyn ReadRule>, enforce_scopes: bool) -> Self {
        Self {
            events,
            rules,
            enforce_scopes,
        }
    }

    /// A page of `identity`'s tenant's events that `filter`, its scopes and the tenant's read rule
    /// let through; `limit` is held to 1..=`MAX_LIMIT`. Events the read rule denies are left out
    /// of the page (which may then hold fewer than `limit`; `next` still leads on).
    pub async fn page(
        &self,
        identity: &Identity,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
    ) -> Result<Page, HistoryError> {
        let readable = if self.enforce_scopes {
            let scopes = identity.user.scope_list();
            if !scopes::allows_any(scopes, Operation::Get) {
                return Err(HistoryError::Forbidden);
            }
            scopes::receivable(filter, scopes)
        } else {
            filter.clone()
        };
        let mut page = self
            .tenant_page(&identity.user.tenant_name, &readable, start, limit)
            .await?;
        let reader = Reader {
            username: &identity.user.username,
            tenant: &identity.user.tenant_name,
            scopes: identity.user.scope_list(),
        };
        let mut answers = ReadAnswers::default();
        let mut kept = Vec::with_capacity(page.events.len());
        for event in page.events {
            if answers.allows(&*self.rules, &reader, &event.event).await {
                kept.push(event);
            }
        }
        // The cursor stays that of the last event read, denied or not.
        page.events = kept;
        Ok(page)
    }

    /// A page of `tenant`'s events that `filter` lets through, for the admin console.
    pub async fn tenant_page(
        &self,
        tenant: &str,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
    ) -> Result<Page, HistoryError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let page = self
            .events
            .history(tenant, filter, start, limit, MAX_PAGE_BYTES)
            .await?;
        Ok(Page::of(page))
    }
}
