//! Retention on LMDB: removes old events so that the database stops growing, never the newest
//! event of a name (the replay on connect keeps every name). It walks the names index, one name's
//! run after another, in write transactions of `SCAN_BATCH` index entries, so the event writer's
//! group commits wait for one batch at most; the caller runs batches until the end. Each tenant's
//! horizon rises to the highest sequence removed: a resume from below it cannot be exact.

use std::collections::HashMap;
use std::ops::Bound;

use heed::types::Bytes;

use super::Store;
use super::erase::{Books, Progress};
use super::history::seq_of;
use crate::event_log::Keep;
use crate::model::Event;
use crate::storage::{StorageError, StorageResult};

/// Names-index entries one transaction looks at.
const SCAN_BATCH: usize = 200;

/// The tenant prefix (`[len: u16 BE][name]`) at the start of an index key.
fn tenant_prefix_of(key: &[u8]) -> Option<&[u8]> {
    let len = u16::from_be_bytes(key.get(..2)?.try_into().ok()?) as usize;
    key.get(..2 + len)
}

impl Store {
    /// Removes what `keep` does not keep among the next `SCAN_BATCH` index entries from `from`.
    pub fn trim_batch(&self, keep: &Keep, from: Option<Vec<u8>>) -> StorageResult<Progress> {
        let mut wtxn = self.env.write_txn()?;
        let range = match &from {
            Some(start) => (Bound::Included(&start[..]), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let entries: Vec<Vec<u8>> = {
            let mut entries = Vec::with_capacity(SCAN_BATCH);
            for entry in self.names.range(&wtxn, &range)?.take(SCAN_BATCH) {
                entries.push(entry?.0.to_vec());
            }
            entries
        };
        // Per name run (key prefix): the newest sequence, and the oldest one the count keeps.
        let mut runs: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
        let raw = self.events.remap_data_type::<Bytes>();
        let mut doomed = Vec::new();
        for key in &entries {
            let run = key[..key.len() - 8].to_vec();
            let seq = seq_of(key);
            if !runs.contains_key(&run) {
                let kept = keep.per_name.map_or(1, |n| n.max(1)) as usize;
                let newest: Vec<u64> = self
                    .names
                    .rev_prefix_iter(&wtxn, &run)?
                    .take(kept)
                    .map(|entry| entry.map(|(key, ())| seq_of(key)))
                    .collect::<Result<_, _>>()?;
                let first = newest.first().copied().unwrap_or(0);
                // With fewer than `kept` events the count keeps them all.
                let oldest_kept = match (keep.per_name, newest.len() == kept) {
                    (Some(_), true) => newest.last().copied().unwrap_or(0),
                    _ => 0,
                };
                runs.insert(run.clone(), (first, oldest_kept));
            }
            let (newest, oldest_kept) = runs[&run];
            if seq == newest {
                continue;
            }
            let Some(tenant) = tenant_prefix_of(key) else {
                continue;
            };
            let mut event_key = tenant.to_vec();
            event_key.extend_from_slice(&seq.to_be_bytes());
            let Some(record) = raw.get(&wtxn, &event_key)? else {
                continue;
            };
            let event: Event = serde_json::from_slice(record)
                .map_err(|e| StorageError::from(heed::Error::Decoding(e.into())))?;
            let too_many = seq < oldest_kept;
            let too_old = keep.before_ms.is_some_and(|before| event.timestamp < before);
            let retry_may_ask = event.idempotency_key.is_some()
                && keep.keyed_since_ms.is_some_and(|since| event.timestamp >= since);
            if (too_many || too_old) && !retry_may_ask {
                doomed.push((event, record.len() as u64));
            }
        }
        let mut books = Books::new();
        for (event, bytes) in &doomed {
            self.remove_event(&mut wtxn, &mut books, event, *bytes)?;
        }
        for (event, _) in &doomed {
            if let Some(book) = books.get_mut(&event.tenant_name) {
                book.horizon = book.horizon.max(event.seq);
            }
        }
        for (tenant, book) in books {
            self.put_book(&mut wtxn, &tenant, book)?;
        }
        wtxn.commit()?;
        let next = match (entries.len() == SCAN_BATCH, entries.last()) {
            (true, Some(last)) => {
                let mut next = last.clone();
                next.push(0);
                Some(next)
            }
            _ => None,
        };
        Ok(Progress {
            next,
            erased: doomed.len() as u64,
        })
    }
}
