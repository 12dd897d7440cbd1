//! The embedded LMDB store (heed): one struct owning the typed databases. No other module knows that
//! LMDB is underneath: `seams.rs` puts it behind the two seams the rest of Broker uses, the event log
//! (`events.rs`, appended to only through the group-commit `writer`) and the user directory
//! (`users.rs`).

mod erase;
mod events;
mod history;
mod retention;
mod seams;
mod tenants;
mod users;
pub mod writer;

use std::path::Path;

use heed::types::{Bytes, SerdeJson, Str, U64, Unit};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, WithoutTls};

use crate::model::{Event, User};
use crate::storage::{StorageError, StorageResult};

pub use seams::{LmdbEventLog, LmdbUsers};

const USERS: &str = "users";
const EVENTS: &str = "events";
const LATEST: &str = "latest";
const META: &str = "meta";
const NAMES: &str = "names";
const TENANTS: &str = "tenants";
const DATABASES: u32 = 6;

impl From<heed::Error> for StorageError {
    fn from(error: heed::Error) -> Self {
        match error {
            heed::Error::Mdb(heed::MdbError::MapFull) => Self::Full,
            other => Self::backend(other),
        }
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
    /// (tenant prefix, event name, 0, seq big-endian) → nothing: the index of history pages by name.
    names: Database<'static, Bytes, Unit>,
    /// tenant prefix → the tenant's sequence floor and stored bytes (`tenants.rs`).
    tenants: Database<'static, Bytes, SerdeJson<tenants::TenantBook>>,
}

/// Creates (or opens) one named database in its own committed transaction.
fn create_database<K: 'static, V: 'static>(
    env: &Env<WithoutTls>,
    name: &str,
) -> StorageResult<Database<'static, K, V>> {
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
    pub fn open(dir: &Path, max_size_mb: usize) -> StorageResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::from(heed::Error::Io(e)))?;
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
        let store = Self {
            users: create_database(&env, USERS)?,
            events: create_database(&env, EVENTS)?,
            latest: create_database(&env, LATEST)?,
            meta: create_database(&env, META)?,
            names: create_database(&env, NAMES)?,
            tenants: create_database(&env, TENANTS)?,
            env,
        };
        store.index_names_once()?;
        store.count_books_once()?;
        Ok(store)
    }

    /// Runs `write` (a user-directory write) on the blocking pool: its LMDB write transaction may
    /// wait behind the event writer's commit and fsync, which must not hold an executor thread.
    pub async fn write_off_executor<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        write: impl FnOnce(&Store) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || write(&store))
            .await
            .map_err(|_| StorageError::CommitFailed)?
    }

    /// Writes a compacted, consistent copy of the whole database to `path` (a read transaction of
    /// its own: writers carry on meanwhile). Written beside `path` and renamed into place, so a
    /// failed copy never leaves a half-written backup under the final name.
    ///
    /// The copy holds every secret Broker keeps (password hashes, TOTP secrets, the biscuit root
    /// key), so it is created readable by its owner only (0600, whatever the umask), as a new file:
    /// a symlink planted at either name is replaced, never followed.
    pub fn backup_to(&self, path: &Path) -> StorageResult<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let partial = path.with_extension("partial");
        let io = |e: std::io::Error| StorageError::from(heed::Error::Io(e));
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
            .map_err(StorageError::from)
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
    pub fn meta_get_or_init(&self, key: &str, init: impl FnOnce() -> Vec<u8>) -> StorageResult<Vec<u8>> {
        let mut wtxn = self.env.write_txn()?;
        if let Some(existing) = self.meta.get(&wtxn, key)? {
            return Ok(existing.to_vec());
        }
        let value = init();
        self.meta.put(&mut wtxn, key, &value)?;
        wtxn.commit()?;
        Ok(value)
    }

    /// The value stored under `key` in the meta table.
    pub fn meta_get(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        let rtxn = self.env.read_txn()?;
        Ok(self.meta.get(&rtxn, key)?.map(<[u8]>::to_vec))
    }

    /// Stores `value` under `key` in the meta table if what is there is `expected` (`None`: nothing
    /// or an empty value), in one write transaction; answers whether it stored.
    pub fn meta_replace(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> StorageResult<bool> {
        let mut wtxn = self.env.write_txn()?;
        let current = self.meta.get(&wtxn, key)?.filter(|bytes| !bytes.is_empty());
        if current != expected.filter(|bytes| !bytes.is_empty()) {
            return Ok(false);
        }
        self.meta.put(&mut wtxn, key, value)?;
        wtxn.commit()?;
        Ok(true)
    }

    /// Stores `value` under `key` in the meta table.
    pub fn meta_set(&self, key: &str, value: &[u8]) -> StorageResult<()> {
        let mut wtxn = self.env.write_txn()?;
        self.meta.put(&mut wtxn, key, value)?;
        wtxn.commit()?;
        Ok(())
    }
}
