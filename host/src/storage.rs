//! What both storage seams (`event_log`, `user_directory`) share, whichever backend is behind them:
//! one error type that names no backend, and the bound on names that become parts of keys. LMDB
//! (`store`) and JetStream (`cluster`) map their own errors into it.

/// Longest tenant name, username or event name in bytes: they are parts of storage keys (an LMDB
/// key holds at most 511 bytes; a NATS subject carries them encoded).
pub const MAX_NAME_BYTES: usize = 200;

/// Whether a username can be stored, in either directory: empty names and names past the bound
/// cannot, so they are simply unknown to every read.
pub fn storable_name(username: &str) -> bool {
    !username.is_empty() && username.len() <= MAX_NAME_BYTES
}

/// Why storage could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the database is full (raise --db_max_mb)")]
    Full,
    /// The tenant's stored events reached its `tenant_max_bytes`: nothing was stored.
    #[error("the tenant's stored events reached tenant_max_bytes")]
    TenantFull,
    /// One record is larger than the store takes (a cluster's `max_payload`): the limit, in bytes.
    #[error("the event is larger than the {0} bytes the event log takes")]
    TooLarge(usize),
    /// A name storage cannot hold as a key (empty, or longer than `MAX_NAME_BYTES`).
    #[error("a name must be 1 to {MAX_NAME_BYTES} bytes")]
    BadKey,
    #[error("the event writer has stopped")]
    WriterStopped,
    /// The backend failed; the text says how (logged, never sent to a client).
    #[error("storage error: {0}")]
    Backend(String),
    /// A batch commit failed for a reason logged by the writer.
    #[error("the commit failed")]
    CommitFailed,
    /// Storage cannot be reached or did not answer in time (cluster mode).
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// A newer event of a name the guest read was committed first: the insert was not stored.
    #[error("a newer event of a name the guest read was committed first")]
    StaleRead,
}

pub type StorageResult<T> = Result<T, StorageError>;

impl StorageError {
    /// Storage failed or did not answer: `error` says how (logged, never sent).
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        Self::Unavailable(error.to_string())
    }

    /// The backend failed: `error` says how.
    pub fn backend(error: impl std::fmt::Display) -> Self {
        Self::Backend(error.to_string())
    }
}
