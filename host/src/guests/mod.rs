//! The guest step of the insert path: each event's data passes through its tenant's guest, which
//! accepts it, replaces it with another JSON document, or rejects it with a message.

/// What a guest is shown of an insert.
#[derive(Debug, Clone)]
pub struct GuestEvent<'a> {
    pub tenant: &'a str,
    pub username: &'a str,
    pub scopes: &'a [String],
    pub event: &'a str,
    /// The event's data as JSON text.
    pub data: &'a str,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// A guest's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Store and publish this JSON text instead (the host checks that it parses).
    Replace(String),
    Reject(String),
}

/// A guest that failed rather than answered. The insert is refused; the host carries on.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("guest exceeded its time limit of {0} ms")]
    Timeout(u64),
    #[error("guest exceeded its memory limit of {0} MiB")]
    OutOfMemory(u64),
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest returned invalid JSON: {0}")]
    InvalidJson(String),
}

/// The guests of every tenant.
#[derive(Default)]
pub struct Guests {}

impl Guests {
    /// Runs `event` through its tenant's guest.
    pub fn check(&self, _event: &GuestEvent<'_>) -> Result<Verdict, GuestError> {
        Ok(Verdict::Accept)
    }
}
