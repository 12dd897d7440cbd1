//! The event log: append (through the writer), events after a sequence, latest per event name.
//!
//! Keys start with a tenant prefix `[len: u16 BE][tenant bytes]`, so one tenant's keys are contiguous
//! and no tenant name can be a prefix of another's keys. Sequences are big-endian so that LMDB's byte
//! order is sequence order.

use std::collections::HashMap;
use std::ops::Bound;

use super::Store;
use super::history::name_key;
use crate::event_log::{EventPage, LatestReplay};
use crate::model::{Event, NewEvent};
use crate::storage::{StorageError, StorageResult};

pub(super) fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let name = tenant.as_bytes();
    let len = u16::try_from(name.len()).expect("tenant names are length-checked at the API");
    let mut key = Vec::with_capacity(2 + name.len() + 8);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(name);
    key
}

pub(super) fn event_key(tenant: &str, seq: u64) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn latest_key(tenant: &str, event_name: &str) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(event_name.as_bytes());
    key
}

impl Store {
    /// Events of `tenant` with a sequence above `after`, in sequence order: at most `limit` of them,
    /// and no more once `max_bytes` of stored records have been read (always at least one).
    pub fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<EventPage> {
        let mut page = EventPage::default();
        let Some(first) = after.checked_add(1) else {
            return Ok(page);
        };
        let (start, end) = (event_key(tenant, first), event_key(tenant, u64::MAX));
        let rtxn = self.env.read_txn()?;
        let range = (Bound::Included(&start[..]), Bound::Included(&end[..]));
        let raw = self.events.remap_data_type::<heed::types::Bytes>();
        for entry in raw.range(&rtxn, &range)? {
            if page.events.len() >= limit || page.bytes >= max_bytes {
                break;
            }
            let (_, record) = entry?;
            let event = serde_json::from_slice(record)
                .map_err(|e| StorageError::from(heed::Error::Decoding(e.into())))?;
            page.bytes += record.len();
            page.events.push(event);
        }
        Ok(page)
    }

    /// The tenant's newest sequence number (0 before its first event).
    pub fn newest_seq(&self, tenant: &str) -> StorageResult<u64> {
        let rtxn = self.env.read_txn()?;
        self.last_seq(&rtxn, tenant)
    }

    /// The newest event of each name in `tenant`, oldest first, and the tenant's newest sequence.
    pub fn latest_events(&self, tenant: &str) -> StorageResult<LatestReplay> {
        let rtxn = self.env.read_txn()?;
        let prefix = tenant_prefix(tenant);
        let mut events = Vec::new();
        for entry in self.latest.prefix_iter(&rtxn, &prefix)? {
            let (_, seq) = entry?;
            if let Some(event) = self.events.get(&rtxn, &event_key(tenant, seq))? {
                events.push(event);
            }
        }
        events.sort_by_key(|event| event.seq);
        let last_seq = self.last_seq(&rtxn, tenant)?;
        Ok(LatestReplay { events, last_seq })
    }

    /// The event of `tenant` numbered `seq`, if it is stored.
    pub fn event_at(&self, tenant: &str, seq: u64) -> StorageResult<Option<Event>> {
        let rtxn = self.env.read_txn()?;
        Ok(self.events.get(&rtxn, &event_key(tenant, seq))?)
    }

    /// The newest event of `name` in `tenant`.
    pub fn latest_of(&self, tenant: &str, name: &str) -> StorageResult<Option<Event>> {
        let rtxn = self.env.read_txn()?;
        match self.latest.get(&rtxn, &latest_key(tenant, name))? {
            Some(seq) => Ok(self.events.get(&rtxn, &event_key(tenant, seq))?),
            None => Ok(None),
        }
    }

    /// The tenant's highest sequence given: its newest stored event's, or the floor an erasure
    /// of its newest events left.
    pub(super) fn last_seq(&self, rtxn: &heed::RoTxn, tenant: &str) -> StorageResult<u64> {
        let prefix = tenant_prefix(tenant);
        let last = self.events.rev_prefix_iter(rtxn, &prefix)?.next().transpose()?;
        let stored = last.map_or(0, |(_, event)| event.seq);
        Ok(stored.max(self.book(rtxn, tenant)?.floor))
    }

    /// Appends `batch` in one transaction, numbering each event after its tenant's last sequence.
    /// An event whose guest reads no longer hold (a newer event of a name it read, this batch's
    /// included) is left out and answered `StaleRead`; the others commit. `last_seqs` caches the
    /// tenants' last sequences; on error the caller must clear it (nothing was committed).
    pub(super) fn append_batch(
        &self,
        batch: Vec<NewEvent>,
        last_seqs: &mut HashMap<String, u64>,
    ) -> StorageResult<Vec<StorageResult<Event>>> {
        let mut wtxn = self.env.write_txn()?;
        let mut stored = Vec::with_capacity(batch.len());
        for new in batch {
            if !self.reads_hold(&wtxn, &new)? {
                stored.push(Err(StorageError::StaleRead));
                continue;
            }
            let last = match last_seqs.get(&new.tenant_name) {
                Some(seq) => *seq,
                None => self.last_seq(&wtxn, &new.tenant_name)?,
            };
            let max_bytes = new.tenant_max_bytes;
            let mut book = self.book(&wtxn, &new.tenant_name)?;
            if max_bytes > 0 && book.bytes >= max_bytes {
                stored.push(Err(StorageError::TenantFull));
                continue;
            }
            let event = Event::from_new(new, last + 1);
            // Encoded once: stored as these bytes, and counted in the tenant's book.
            let record = serde_json::to_vec(&event)
                .map_err(|e| StorageError::from(heed::Error::Encoding(e.into())))?;
            let raw = self.events.remap_data_type::<heed::types::Bytes>();
            raw.put(&mut wtxn, &event_key(&event.tenant_name, event.seq), &record)?;
            book.bytes += record.len() as u64;
            self.put_book(&mut wtxn, &event.tenant_name, book)?;
            self.latest.put(
                &mut wtxn,
                &latest_key(&event.tenant_name, &event.event),
                &event.seq,
            )?;
            self.names.put(
                &mut wtxn,
                &name_key(&event.tenant_name, &event.event, event.seq),
                &(),
            )?;
            last_seqs.insert(event.tenant_name.clone(), event.seq);
            stored.push(Ok(event));
        }
        wtxn.commit()?;
        Ok(stored)
    }

    /// Whether the newest event of each name `new`'s guest read is still the one it saw.
    fn reads_hold(&self, txn: &heed::RoTxn, new: &NewEvent) -> StorageResult<bool> {
        for read in &new.reads {
            let newest = self.latest.get(txn, &latest_key(&new.tenant_name, &read.name))?;
            if newest.unwrap_or(0) != read.seq {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
