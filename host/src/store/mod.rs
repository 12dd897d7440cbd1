//! The embedded LMDB store (heed): one struct owning the typed databases. No other module knows that
//! LMDB is underneath: `seams.rs` puts it behind the two seams the rest of Broker uses, the event log
//! (`events.rs`, appended to only through the group-commit `writer`) and the user directory
//! (`users.rs`).

mod events;
mod seams;
mod users;
pub mod writer;

use std::path::Path;

use heed::types::{Bytes, SerdeJson, Str, U64};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, WithoutTls};

use crate::model::{Event, User};

pub use events::{EventPage, LatestReplay};
pub use seams::{LmdbEventLog, LmdbUsers};

const USERS: &str = "users";
const EVENTS: &str = "events";
const LATEST: &str = "latest";
const META: &str = "meta";
const DATABASES: u32 = 4;

/// Longest tenant name, username or event name in bytes: they are parts of LMDB keys (max 511 bytes).
pub const MAX_NAME_BYTES: usize = 200;

/// Whether a username can be stored, in either directory: empty names and names past the bound
/// cannot (an LMDB key has at most 511 bytes), so they are simply unknown to every read.
pub fn storable_name(username: &str) -> bool {
    !username.is_empty() && username.len() <= MAX_NAME_BYTES
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is full (raise --db_max_mb)")]
    Full,
    /// A name the store cannot hold as a key (empty, or longer than `MAX_NAME_BYTES`).
    #[error("a name must be 1 to {MAX_NAME_BYTES} bytes")]
    BadKey,
    #[error("the event writer has stopped")]
    WriterStopped,
    #[error("database error: {0}")]
    Lmdb(heed::Error),
    /// A batch commit failed for a reason logged by the writer.
    #[error("the commit failed")]
    CommitFailed,
    /// The storage cluster cannot be reached or did not answer in time (cluster mode).
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// A newer event of a name the guest read was committed first: the insert was not stored.
    #[error("a newer event of a name the guest read was committed first")]
    StaleRead,
}

impl From<heed::Error> for StoreError {
    fn from(error: heed::Error) -> Self {
        match error {
            heed::Error::Mdb(heed::MdbError::MapFull) => Self::Full,
            other => Self::Lmdb(other),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// The storage cluster failed or did not answer: `error` says how (logged, never sent).
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// The LMDB environment and its typed databases.
pub struct Store {
    env: Env<WithoutTls>,
    /// username → user record (usernames are unique across tenants).
    users: Database<'static, Str, SerdeJson<User>>,
    /// (tenant prefix, seq big-endian) → event record.
    events: Database<'static, Bytes, SerdeJson<Event>>,
    /// (tenant prefix, event name) → seq of the newest event of that name.
    latest: Database<'static, Bytes, U64<heed::byteorder::BigEndian>>,
    /// Server-wide values such as the biscuit root key.
    meta: Database<'static, Str, Bytes>,
}

/// Creates (or opens) one named database in its own committed transaction.
fn create_database<K: 'static, V: 'static>(
    env: &Env<WithoutTls>,
    name: &str,
) -> StoreResult<Database<'static, K, V>> {
    let wtxn = env.write_txn()?;
    let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
        opener
            .create_database::<K, V>(wtxn, Some(name))
            .map(CommitOrAbort::<_, ()>::Commit)
    })?;
    Ok(created.unwrap_commit())
}

impl Store {
    /// Opens (creating if needed) the database directory.
    pub fn open(dir: &Path, max_size_mb: usize) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Lmdb(heed::Error::Io(e)))?;
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options
            .map_size(max_size_mb.max(1) * 1024 * 1024)
            .max_dbs(DATABASES);
        // SAFETY: heed's `open` is unsafe because the same LMDB file must not be opened twice in one
        // process (LMDB's own rule); Broker opens its database directory exactly once, here.
        #[expect(
            unsafe_code,
            reason = "LMDB environments are opened through an unsafe heed API"
        )]
        let env = unsafe { options.open(dir)? };
        Ok(Self {
            users: create_database(&env, USERS)?,
            events: create_database(&env, EVENTS)?,
            latest: create_database(&env, LATEST)?,
            meta: create_database(&env, META)?,
            env,
        })
    }

    /// Runs `write` (a user-directory write) on the blocking pool: its LMDB write transaction may
    /// wait behind the event writer's commit and fsync, which must not hold an executor thread.
    pub async fn write_off_executor<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        write: impl FnOnce(&Store) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || write(&store))
            .await
            .map_err(|_| StoreError::CommitFailed)?
    }

    /// Writes a compacted, consistent copy of the whole database to `path` (a read transaction of
    /// its own: writers carry on meanwhile). Written beside `path` and renamed into place, so a
    /// failed copy never leaves a half-written backup under the final name.
    ///
    /// The copy holds every secret Broker keeps (password hashes, TOTP secrets, the biscuit root
    /// key), so it is created readable by its owner only (0600, whatever the umask), as a new file:
    /// a symlink planted at either name is replaced, never followed.
    pub fn backup_to(&self, path: &Path) -> StoreResult<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let partial = path.with_extension("partial");
        let io = |e: std::io::Error| StoreError::Lmdb(heed::Error::Io(e));
        // A leftover of a failed backup (or a planted link): removing a symlink removes the link.
        match std::fs::remove_file(&partial) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io(error)),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io)?;
        let copied = self
            .env
            .copy_to_file(&mut file, heed::CompactionOption::Enabled)
            .map_err(StoreError::from)
            .and_then(|()| file.sync_all().map_err(io));
        if let Err(error) = copied {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
        // rename replaces whatever is at `path` (a symlink included) without following it.
        std::fs::rename(&partial, path).map_err(io)?;
        Ok(())
    }

    /// The value stored under `key` in the meta table, or `init()` stored there first.
    pub fn meta_get_or_init(&self, key: &str, init: impl FnOnce() -> Vec<u8>) -> StoreResult<Vec<u8>> {
        let mut wtxn = self.env.write_txn()?;
        if let Some(existing) = self.meta.get(&wtxn, key)? {
            return Ok(existing.to_vec());
        }
        let value = init();
        self.meta.put(&mut wtxn, key, &value)?;
        wtxn.commit()?;
        Ok(value)
    }
}
