//! The insert path, one library call: guest → commit → publish. The HTTP handler authenticates the
//! caller first and maps the result to a response.

use std::sync::Arc;

use serde_json::Value;

use crate::auth::Identity;
use crate::auth::scopes::{self, Operation};
use crate::clock::Clock;
use crate::event_log::EventLog;
use crate::guests::{GuestError, GuestEvent, Guests, Verdict};
use crate::idempotency::IdempotencyKey;
use crate::metrics::metrics;
use crate::model::{Event, LatestRead, NewEvent, User};
use crate::storage::StorageError;

/// Longest guest rejection message passed on to the client, in bytes.
const MAX_REJECTION_BYTES: usize = 1024;
/// Times an insert is judged while the state its guest read keeps changing before it commits.
const MAX_JUDGEMENTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("scope {0}:post (or *:post) is needed to insert this event")]
    Forbidden(String),
    #[error("rejected by guest: {0}")]
    Rejected(String),
    #[error(
        "the events this insert was judged on kept changing ({MAX_JUDGEMENTS} tries); read them again and retry"
    )]
    Conflict,
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Store(#[from] StorageError),
}

/// The insert path and what it touches: the event log, the guests, the clock and two flags.
pub struct Inserts {
    events: Arc<dyn EventLog>,
    guests: Arc<Guests>,
    clock: Arc<Clock>,
    /// `--enforce_scopes`: inserting `E` needs `E:post` or `*:post`.
    enforce_scopes: bool,
    /// `--bypass_guests`: skip the guest step (for measuring its cost only).
    bypass_guests: bool,
}

impl Inserts {
    pub fn new(
        events: Arc<dyn EventLog>,
        guests: Arc<Guests>,
        clock: Arc<Clock>,
        enforce_scopes: bool,
        bypass_guests: bool,
    ) -> Self {
        Self {
            events,
            guests,
            clock,
            enforce_scopes,
            bypass_guests,
        }
    }

    /// Inserts one event for `identity`'s tenant:
    /// 0. with `--enforce_scopes`, the caller's scopes must allow posting this event name;
    /// 1. the tenant's guest validates or transforms `data` (a rejection stops here: nothing stored);
    /// 2. the writer commits it and numbers it (answered only after the commit), provided that what
    ///    the guest read of the tenant's state still holds; if not, back to 1, a bounded number of
    ///    times;
    /// 3. the writer hands it to the tenant's live subscribers, in commit order.
    ///
    /// With an idempotency `key` that an event was committed with within the window, that event
    /// is the answer and nothing is stored (before 0: a retry is not judged again). `max_bytes`:
    /// the tenant's `tenant_max_bytes` (0: none), checked at the commit.
    pub async fn insert(
        &self,
        identity: &Identity,
        event: String,
        data: Value,
        key: Option<IdempotencyKey>,
        max_bytes: u64,
    ) -> Result<Arc<Event>, InsertError> {
        if let Some(key) = &key
            && let Some(stored) = self.events.committed_with(key).await?
        {
            metrics().insert("repeated");
            return Ok(Arc::new(stored));
        }
        let inserted = self.judge_and_commit(identity, event, data, key, max_bytes).await;
        metrics().insert(match &inserted {
            Ok(_) => "accepted",
            Err(InsertError::Forbidden(_)) => "refused_by_scope",
            Err(InsertError::Rejected(_)) => "rejected_by_guest",
            Err(InsertError::Conflict) => "conflict",
            Err(InsertError::Guest(_) | InsertError::Store(_)) => "failed",
        });
        inserted
    }

    async fn judge_and_commit(
        &self,
        identity: &Identity,
        event: String,
        data: Value,
        key: Option<IdempotencyKey>,
        max_bytes: u64,
    ) -> Result<Arc<Event>, InsertError> {
        let user = &identity.user;
        if self.enforce_scopes && !scopes::allows(user.scope_list(), &event, Operation::Post) {
            return Err(InsertError::Forbidden(event));
        }
        let timestamp = self.clock.now_millis();
        let (mut event, mut data) = (event, data);
        for _ in 0..MAX_JUDGEMENTS {
            let (replaced, reads) = self.judge(user, &event, &data, timestamp).await?;
            // Only a guest that read state can be judged again: otherwise the insert's own copies go.
            let may_judge_again = !reads.is_empty();
            let keep_or_take = |value: &mut Value| match may_judge_again {
                true => value.clone(),
                false => std::mem::take(value),
            };
            let new = NewEvent {
                tenant_name: user.tenant_name.clone(),
                username: user.username.clone(),
                event: if may_judge_again {
                    event.clone()
                } else {
                    std::mem::take(&mut event)
                },
                data: replaced.unwrap_or_else(|| keep_or_take(&mut data)),
                timestamp,
                reads,
                idempotency_key: key.clone(),
                tenant_max_bytes: max_bytes,
            };
            match self.events.append(new).await {
                Err(StorageError::StaleRead) => {
                    metrics().guest_rejudgements.inc();
                }
                committed => return Ok(committed?),
            }
        }
        Err(InsertError::Conflict)
    }

    /// The guest step: the guest's replacement data if it gave one, and what it read of the
    /// tenant's state to decide.
    async fn judge(
        &self,
        user: &User,
        event: &str,
        data: &Value,
        timestamp: u64,
    ) -> Result<(Option<Value>, Vec<LatestRead>), InsertError> {
        if self.bypass_guests {
            return Ok((None, Vec::new()));
        }
        let text = data.to_string();
        let guest_event = GuestEvent {
            tenant: &user.tenant_name,
            username: &user.username,
            scopes: user.scope_list(),
            event,
            data: &text,
            timestamp,
        };
        let judgement = self.guests.check(&guest_event).await?;
        let data = match judgement.verdict {
            Verdict::Accept => None,
            Verdict::Replace(document) => Some(document),
            Verdict::Reject(message) => {
                let message = crate::validate::printable(&message, MAX_REJECTION_BYTES);
                return Err(InsertError::Rejected(message));
            }
        };
        Ok((data, judgement.reads))
    }
}
