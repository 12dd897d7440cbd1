//! Erasure: a user's events in every tenant, or a whole tenant's, removed so that no read answers
//! them (stream, replay, resume, history pages) and a backup taken afterwards holds none of their
//! bytes (`Store::backup_to` copies live pages only). The live file keeps the freed pages' old bytes
//! until LMDB reuses them for new writes.
//!
//! Each call is one write transaction over at most `SCAN_BATCH` stored events, so the event writer's
//! group commits wait for one batch at most; the caller runs batches until the end is reached.
//! Every index moves with the events: the newest of a name falls back to the one before it.

use std::collections::HashMap;
use std::ops::Bound;

use heed::types::Bytes;

use super::Store;
use super::events::{event_key, latest_key, tenant_prefix};
use super::history::{name_key, name_prefix, seq_of};
use super::tenants::TenantBook;
use crate::event_log::Erase;
use crate::model::Event;
use crate::storage::{StorageError, StorageResult};

/// Stored events one transaction looks at.
const SCAN_BATCH: usize = 1_000;

/// How far an erasure got: where the next batch starts (`None`: done), and events erased so far.
#[derive(Debug, Default)]
pub struct Progress {
    pub next: Option<Vec<u8>>,
    pub erased: u64,
}

/// The books of the tenants a transaction removes events of, written back at its end.
pub(super) type Books = HashMap<String, TenantBook>;

impl Store {
    /// Removes one stored event and every index entry of it, and counts it in its tenant's book
    /// (`books`, loaded on first use): the bytes it took go, the floor keeps its sequence given.
    pub(super) fn remove_event(
        &self,
        wtxn: &mut heed::RwTxn,
        books: &mut Books,
        event: &Event,
        bytes: u64,
    ) -> StorageResult<()> {
        let tenant = event.tenant_name.as_str();
        if !books.contains_key(tenant) {
            let mut book = self.book(wtxn, tenant)?;
            // Past this removal the newest stored sequence may fall: keep the highest given.
            book.floor = book.floor.max(self.last_seq(wtxn, tenant)?);
            books.insert(tenant.to_owned(), book);
        }
        if let Some(book) = books.get_mut(tenant) {
            book.bytes = book.bytes.saturating_sub(bytes);
        }
        self.events.delete(wtxn, &event_key(tenant, event.seq))?;
        self.names
            .delete(wtxn, &name_key(tenant, &event.event, event.seq))?;
        let latest = latest_key(tenant, &event.event);
        if self.latest.get(wtxn, &latest)? == Some(event.seq) {
            // The newest of the name is now the one before it, if any is left.
            let prefix = name_prefix(tenant, &event.event);
            let before = self.names.rev_prefix_iter(wtxn, &prefix)?.next().transpose()?;
            match before.map(|(key, ())| seq_of(key)) {
                Some(seq) => self.latest.put(wtxn, &latest, &seq)?,
                None => drop(self.latest.delete(wtxn, &latest)?),
            }
        }
        Ok(())
    }

    /// Erases what `which` selects among the next `SCAN_BATCH` stored events from `from` (the
    /// start when `None`), in one transaction.
    pub fn erase_batch(&self, which: &Erase, from: Option<Vec<u8>>) -> StorageResult<Progress> {
        let raw = self.events.remap_data_type::<Bytes>();
        let mut wtxn = self.env.write_txn()?;
        let (start, end) = match which {
            Erase::User(_) => (Vec::new(), None),
            Erase::Tenant(tenant) => (tenant_prefix(tenant), Some(event_key(tenant, u64::MAX))),
        };
        let start = from.unwrap_or(start);
        // Collected first: LMDB cannot delete under an open cursor of the same transaction.
        let (mut doomed, mut last_seen, mut seen) = (Vec::new(), None, 0);
        {
            // LMDB takes no empty key, not even as a range's start.
            let lower = match start.is_empty() {
                true => Bound::Unbounded,
                false => Bound::Included(&start[..]),
            };
            let range = (lower, end.as_deref().map_or(Bound::Unbounded, Bound::Included));
            for entry in raw.range(&wtxn, &range)? {
                let (key, record) = entry?;
                seen += 1;
                last_seen = Some(key.to_vec());
                let event: Event = serde_json::from_slice(record)
                    .map_err(|e| StorageError::from(heed::Error::Decoding(e.into())))?;
                let selected = match which {
                    Erase::User(username) => event.username == *username,
                    Erase::Tenant(_) => true,
                };
                if selected {
                    doomed.push((event, record.len() as u64));
                }
                if seen == SCAN_BATCH {
                    break;
                }
            }
        }
        let mut books = HashMap::new();
        for (event, bytes) in &doomed {
            self.remove_event(&mut wtxn, &mut books, event, *bytes)?;
        }
        for (tenant, book) in books {
            self.put_book(&mut wtxn, &tenant, book)?;
        }
        wtxn.commit()?;
        let next = match (seen == SCAN_BATCH, last_seen) {
            (true, Some(mut last)) => {
                // The smallest key after `last`.
                last.push(0);
                Some(last)
            }
            _ => None,
        };
        Ok(Progress {
            next,
            erased: doomed.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::model::NewEvent;

    fn new_event(tenant: &str, username: &str, name: &str, n: u64) -> NewEvent {
        NewEvent {
            tenant_name: tenant.into(),
            username: username.into(),
            event: name.into(),
            data: json!({"n": n}),
            timestamp: 0,
            reads: Vec::new(),
            idempotency_key: None,
            tenant_max_bytes: 0,
        }
    }

    /// Bytes of every stored record of `tenant`, counted afresh.
    fn counted_bytes(store: &Store, tenant: &str) -> u64 {
        let page = store.events_after(tenant, 0, usize::MAX, usize::MAX).unwrap();
        page.bytes as u64
    }

    /// Runs an erasure to its end: events erased, and the batches it took.
    fn erase_all(store: &Store, which: &Erase) -> (u64, u32) {
        let (mut from, mut erased, mut batches) = (None, 0, 0);
        loop {
            let progress = store.erase_batch(which, from).unwrap();
            erased += progress.erased;
            batches += 1;
            match progress.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        (erased, batches)
    }

    #[test]
    fn a_users_events_go_across_batches_and_every_index_and_book_follows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 256).unwrap();
        let mut last_seqs = HashMap::new();
        // 12,000 events in two tenants; ann wrote every third, and the newest of name `x` in `t`.
        let batch: Vec<_> = (0..12_000u64)
            .map(|n| {
                let (tenant, user) = (
                    ["t", "u"][(n % 2) as usize],
                    if n % 3 == 0 { "ann" } else { "bob" },
                );
                new_event(tenant, user, ["x", "y"][(n % 4 / 2) as usize], n)
            })
            .collect();
        for chunk in batch.chunks(2_000) {
            store.append_batch(chunk.to_vec(), &mut last_seqs).unwrap();
        }
        store
            .append_batch(vec![new_event("t", "ann", "x", 99_999)], &mut last_seqs)
            .unwrap();
        let newest_t = store.newest_seq("t").unwrap();
        // 12,001 events looked at, 1,000 a transaction.
        assert_eq!(erase_all(&store, &Erase::User("ann".into())), (4_001, 13));
        for tenant in ["t", "u"] {
            let left = store
                .events_after(tenant, 0, usize::MAX, usize::MAX)
                .unwrap()
                .events;
            assert!(left.iter().all(|event| event.username == "bob"));
            assert_eq!(
                store.stored_bytes(tenant).unwrap(),
                counted_bytes(&store, tenant),
                "{tenant}"
            );
            // The newest of each name is the newest remaining one.
            for name in ["x", "y"] {
                let newest = left
                    .iter()
                    .filter(|event| event.event == name)
                    .map(|e| e.seq)
                    .max();
                let latest = store.latest_of(tenant, name).unwrap().map(|event| event.seq);
                assert_eq!(latest, newest, "{tenant} {name}");
            }
        }
        // Ann's erased event was `t`'s newest: its sequence is not given again.
        assert_eq!(store.newest_seq("t").unwrap(), newest_t);
        let next = store
            .append_batch(vec![new_event("t", "bob", "x", 0)], &mut HashMap::new())
            .unwrap();
        assert_eq!(next[0].as_ref().unwrap().seq, newest_t + 1);
        // A whole tenant goes, and its book with it.
        assert_eq!(erase_all(&store, &Erase::Tenant("u".into())), (4_000, 5));
        assert_eq!(store.stored_bytes("u").unwrap(), 0);
        assert!(store.latest_events("u").unwrap().events.is_empty());
        assert_eq!(store.stored_bytes("t").unwrap(), counted_bytes(&store, "t"));
    }
}
