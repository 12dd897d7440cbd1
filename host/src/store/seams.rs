//! LMDB behind the two seams (`EventLog`, `UserDirectory`): reads run inline (they never wait for a
//! writer), writes go through the group-commit writer or the blocking pool.

use std::sync::Arc;

use super::Store;
use super::writer::EventWriter;
use crate::event_log::{Erase, EventLog, Keep};
use crate::event_log::{EventPage, HistoryPage, LatestReplay, PageStart};
use crate::filter::EventFilter;
use crate::idempotency::IdempotencyKey;
use crate::model::{Event, NewEvent, User};
use crate::storage::StorageResult;
use crate::user_directory::{UserChange, UserChanged, UserDirectory};

/// The event log on one node: LMDB, appended to by the single writer thread.
pub struct LmdbEventLog {
    store: Arc<Store>,
    writer: EventWriter,
}

impl LmdbEventLog {
    pub fn new(store: Arc<Store>, writer: EventWriter) -> Self {
        Self { store, writer }
    }
}

#[async_trait::async_trait]
impl EventLog for LmdbEventLog {
    async fn append(&self, event: NewEvent) -> StorageResult<Arc<Event>> {
        self.writer.append(event).await
    }

    async fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<EventPage> {
        self.store.events_after(tenant, after, limit, max_bytes)
    }

    async fn history(
        &self,
        tenant: &str,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        self.store.history(tenant, filter, start, limit, max_bytes)
    }

    async fn latest_events(&self, tenant: &str) -> StorageResult<LatestReplay> {
        self.store.latest_events(tenant)
    }

    async fn newest_seq(&self, tenant: &str) -> StorageResult<u64> {
        self.store.newest_seq(tenant)
    }

    async fn latest_of(&self, tenant: &str, name: &str) -> StorageResult<Option<Event>> {
        self.store.latest_of(tenant, name)
    }

    async fn committed_with(&self, key: &IdempotencyKey) -> StorageResult<Option<Event>> {
        let Some(at) = self.writer.recent_keys().get(key) else {
            return Ok(None);
        };
        let event = self.store.event_at(&at.tenant, at.seq)?;
        Ok(event.filter(|event| event.idempotency_key.as_ref() == Some(key)))
    }

    async fn erase(&self, which: Erase) -> StorageResult<u64> {
        let which = Arc::new(which);
        in_paced_batches(&self.store, move |store, from| store.erase_batch(&which, from)).await
    }

    async fn trim(&self, keep: Keep) -> StorageResult<u64> {
        in_paced_batches(&self.store, move |store, from| store.trim_batch(&keep, from)).await
    }

    async fn horizon(&self, tenant: &str) -> StorageResult<u64> {
        self.store.horizon(tenant)
    }

    async fn stored_bytes(&self, tenant: &str) -> StorageResult<Option<u64>> {
        self.store.stored_bytes(tenant).map(Some)
    }

    async fn stopped(&self) {
        self.writer.stopped().await;
    }
}

/// Runs `batch` (one write transaction each) from the start until it reports no next batch; answers
/// the events it removed. After each batch it waits twice as long as the batch took: LMDB's write
/// lock is not fair, and batches run back to back took it again and again while the event writer's
/// group commits waited (insert p99 3.6x during a large retention pass; 1.34x paced). So removal
/// takes at most a third of the write lock's time, and an insert waits for one batch at most.
async fn in_paced_batches(
    store: &Arc<Store>,
    batch: impl Fn(&Store, Option<Vec<u8>>) -> StorageResult<super::erase::Progress> + Send + Sync + 'static,
) -> StorageResult<u64> {
    let batch = Arc::new(batch);
    let (mut from, mut removed) = (None, 0);
    loop {
        let started = tokio::time::Instant::now();
        let step = batch.clone();
        let progress = store.write_off_executor(move |store| step(store, from)).await?;
        removed += progress.erased;
        match progress.next {
            Some(next) => from = Some(next),
            None => return Ok(removed),
        }
        tokio::time::sleep(started.elapsed() * 2).await;
    }
}

/// The user directory on one node: LMDB, each write one transaction on the blocking pool.
pub struct LmdbUsers {
    store: Arc<Store>,
    changed: UserChanged,
}

impl LmdbUsers {
    pub fn new(store: Arc<Store>, changed: UserChanged) -> Self {
        Self { store, changed }
    }
}

#[async_trait::async_trait]
impl UserDirectory for LmdbUsers {
    async fn get(&self, username: &str) -> StorageResult<Option<User>> {
        self.store.get_user(username)
    }

    async fn list(&self) -> StorageResult<Vec<User>> {
        self.store.list_users()
    }

    async fn create(&self, user: User) -> StorageResult<bool> {
        self.store
            .write_off_executor(move |store| store.create_user(&user))
            .await
    }

    async fn update_if(&self, username: &str, change: UserChange) -> StorageResult<Option<User>> {
        let name = username.to_owned();
        let updated = self
            .store
            .write_off_executor(move |store| store.update_user_if(&name, change))
            .await?;
        if updated.is_some() {
            (self.changed)(username);
        }
        Ok(updated)
    }

    async fn delete(&self, username: &str) -> StorageResult<Option<User>> {
        let name = username.to_owned();
        let deleted = self
            .store
            .write_off_executor(move |store| store.delete_user(&name))
            .await?;
        if deleted.is_some() {
            (self.changed)(username);
        }
        Ok(deleted)
    }

    async fn shared_value(&self, key: &str, init: Vec<u8>) -> StorageResult<Vec<u8>> {
        self.store.meta_get_or_init(key, || init)
    }

    async fn value(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        self.store.meta_get(key)
    }

    async fn set_value(&self, key: &str, value: Vec<u8>) -> StorageResult<()> {
        let key = key.to_owned();
        self.store
            .write_off_executor(move |store| store.meta_set(&key, &value))
            .await
    }

    async fn replace_value(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> StorageResult<bool> {
        let key = key.to_owned();
        self.store
            .write_off_executor(move |store| store.meta_replace(&key, expected.as_deref(), &value))
            .await
    }
}
