//! The insert path, one library call: guest → commit → publish. The HTTP handler authenticates the
//! caller first and maps the result to a response.

use std::sync::Arc;

use serde_json::Value;

use crate::auth::Identity;
use crate::auth::scopes::{self, Operation};
use crate::guests::{GuestError, GuestEvent, Verdict};
use crate::model::{Event, NewEvent};
use crate::state::AppState;
use crate::store::StoreError;

/// Longest guest rejection message passed on to the client, in bytes.
const MAX_REJECTION_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("scope {0}:post (or *:post) is needed to insert this event")]
    Forbidden(String),
    #[error("rejected by guest: {0}")]
    Rejected(String),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Inserts one event for `identity`'s tenant:
/// 0. with `--enforce_scopes`, the caller's scopes must allow posting this event name;
/// 1. the tenant's guest validates or transforms `data` (a rejection stops here: nothing stored);
/// 2. the writer commits it and numbers it (answered only after the commit);
/// 3. the writer hands it to the tenant's live subscribers, in commit order.
pub async fn insert(
    state: &AppState,
    identity: &Identity,
    event: String,
    data: Value,
) -> Result<Arc<Event>, InsertError> {
    let user = &identity.user;
    if state.config.enforce_scopes && !scopes::allows(user.scope_list(), &event, Operation::Post) {
        return Err(InsertError::Forbidden(event));
    }
    let timestamp = state.clock.now_millis();
    let data = if state.config.bypass_guests {
        data
    } else {
        let text = data.to_string();
        let guest_event = GuestEvent {
            tenant: &user.tenant_name,
            username: &user.username,
            scopes: user.scope_list(),
            event: &event,
            data: &text,
            timestamp,
        };
        match state.guests.check(&guest_event).await? {
            Verdict::Accept => data,
            Verdict::Replace(json) => {
                serde_json::from_str(&json).map_err(|e| GuestError::InvalidJson(e.to_string()))?
            }
            Verdict::Reject(message) => {
                let message = crate::validate::printable(&message, MAX_REJECTION_BYTES);
                return Err(InsertError::Rejected(message));
            }
        }
    };
    let new = NewEvent {
        tenant_name: user.tenant_name.clone(),
        username: user.username.clone(),
        event,
        data,
        timestamp,
    };
    Ok(state.writer.append(new).await?)
}
