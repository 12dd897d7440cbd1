//! Per-tenant bookkeeping kept beside the events, in the same transactions: the sequence floor (the
//! highest sequence ever given, so that erasing a tenant's newest events never lets a sequence be
//! given twice, which a client resuming from it would skip) and the bytes its stored events take
//! (`--tenant_max_bytes`).

use std::ops::Bound;

use heed::types::Bytes;
use serde::{Deserialize, Serialize};

use super::Store;
use super::events::tenant_prefix;
use crate::storage::StorageResult;

/// Marks a database whose tenant books were counted from its events (once, at the first start of
/// a version that keeps them).
const BOOKS_COUNTED: &str = "tenant-books-counted";
const COUNT_BATCH: usize = 10_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantBook {
    /// Sequences at or below it were given, whether or not their events are still stored.
    pub floor: u64,
    /// Bytes of the tenant's stored event records.
    pub bytes: u64,
    /// The highest sequence retention removed: a resume from below it cannot be exact.
    #[serde(default)]
    pub horizon: u64,
}

impl Store {
    pub(super) fn book(&self, txn: &heed::RoTxn, tenant: &str) -> StorageResult<TenantBook> {
        Ok(self.tenants.get(txn, &tenant_prefix(tenant))?.unwrap_or_default())
    }

    pub(super) fn put_book(
        &self,
        wtxn: &mut heed::RwTxn,
        tenant: &str,
        book: TenantBook,
    ) -> StorageResult<()> {
        Ok(self.tenants.put(wtxn, &tenant_prefix(tenant), &book)?)
    }

    /// The highest sequence of `tenant` that retention removed (0: none).
    pub fn horizon(&self, tenant: &str) -> StorageResult<u64> {
        let rtxn = self.env.read_txn()?;
        Ok(self.book(&rtxn, tenant)?.horizon)
    }

    /// Bytes `tenant`'s stored events take.
    pub fn stored_bytes(&self, tenant: &str) -> StorageResult<u64> {
        let rtxn = self.env.read_txn()?;
        Ok(self.book(&rtxn, tenant)?.bytes)
    }

    /// Counts each tenant's stored bytes from its events, once: a database from before the books
    /// gains them at its first start, in transactions of `COUNT_BATCH` events.
    pub(super) fn count_books_once(&self) -> StorageResult<()> {
        {
            let rtxn = self.env.read_txn()?;
            if self.meta.get(&rtxn, BOOKS_COUNTED)?.is_some() {
                return Ok(());
            }
        }
        // A count cut short (a crash before the marker) starts over rather than adding twice; the
        // books hold nothing else yet, as no erasure ran on a database without them.
        let mut wtxn = self.env.write_txn()?;
        self.tenants.clear(&mut wtxn)?;
        wtxn.commit()?;
        let raw = self.events.remap_data_type::<Bytes>();
        let mut from: Option<Vec<u8>> = None;
        loop {
            // (tenant prefix, bytes) of the next batch of events, in key order.
            let batch: Vec<(Vec<u8>, Vec<u8>, u64)> = {
                let rtxn = self.env.read_txn()?;
                let range = match &from {
                    None => (Bound::Unbounded, Bound::Unbounded),
                    Some(last) => (Bound::Excluded(&last[..]), Bound::Unbounded),
                };
                let mut batch = Vec::with_capacity(COUNT_BATCH);
                for entry in raw.range(&rtxn, &range)?.take(COUNT_BATCH) {
                    let (key, record) = entry?;
                    let prefix = key[..key.len() - 8].to_vec();
                    batch.push((key.to_vec(), prefix, record.len() as u64));
                }
                batch
            };
            let Some((last, _, _)) = batch.last() else { break };
            from = Some(last.clone());
            let mut wtxn = self.env.write_txn()?;
            for (_, prefix, bytes) in &batch {
                let mut book = self.tenants.get(&wtxn, prefix)?.unwrap_or_default();
                book.bytes += bytes;
                self.tenants.put(&mut wtxn, prefix, &book)?;
            }
            wtxn.commit()?;
        }
        let mut wtxn = self.env.write_txn()?;
        self.meta.put(&mut wtxn, BOOKS_COUNTED, b"1")?;
        wtxn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::model::NewEvent;

    #[test]
    fn a_database_from_before_the_books_counts_them_once_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64).unwrap();
        let events = (0..25u64).map(|n| NewEvent {
            tenant_name: ["a", "b"][(n % 2) as usize].into(),
            username: "u".into(),
            event: "e".into(),
            data: json!({"n": n, "pad": "x".repeat(n as usize)}),
            timestamp: 0,
            reads: Vec::new(),
            idempotency_key: None,
            tenant_max_bytes: 0,
        });
        store.append_batch(events.collect(), &mut HashMap::new()).unwrap();
        let kept = [store.stored_bytes("a").unwrap(), store.stored_bytes("b").unwrap()];
        assert!(kept[0] > 0 && kept[1] > 0);
        // Forget the books, as a database written by an older Broker has none.
        let mut wtxn = store.env.write_txn().unwrap();
        store.tenants.clear(&mut wtxn).unwrap();
        store.meta.delete(&mut wtxn, BOOKS_COUNTED).unwrap();
        wtxn.commit().unwrap();
        drop(store);
        let store = Store::open(dir.path(), 64).unwrap();
        assert_eq!(
            [store.stored_bytes("a").unwrap(), store.stored_bytes("b").unwrap()],
            kept
        );
        assert_eq!(store.stored_bytes("c").unwrap(), 0);
    }
}
