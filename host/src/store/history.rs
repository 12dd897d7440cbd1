//! Pages of history (`GET /events`): newest first below a sequence, or oldest first above one, for a
//! filter. Each event is indexed by (tenant, name, sequence) besides (tenant, sequence), so a page
//! for some names merges those names' runs of the index: it costs the page plus one seek per name
//! the filter reaches, whatever the size of the tenant.

use std::collections::BinaryHeap;
use std::ops::Bound;

use super::Store;
use super::events::{event_key, tenant_prefix};
use crate::event_log::{HistoryPage, PageStart};
use crate::filter::EventFilter;
use crate::model::Event;
use crate::storage::{StorageError, StorageResult};

/// Events indexed per write transaction while an older database gains the name index.
const INDEX_BATCH: usize = 10_000;
/// The meta key set once every stored event is in the name index.
const NAMES_INDEXED: &str = "names-indexed";

/// `[tenant prefix][name][0][seq big-endian]`: a name holds no control character, so the zero byte
/// ends it, and one name's sequences are contiguous and in order.
pub(super) fn name_key(tenant: &str, name: &str, seq: u64) -> Vec<u8> {
    name_key_after_prefix(tenant_prefix(tenant), name, seq)
}

/// The start of every index key of `name` in `tenant`.
pub(super) fn name_prefix(tenant: &str, name: &str) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

fn name_key_after_prefix(mut key: Vec<u8>, name: &str, seq: u64) -> Vec<u8> {
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence at the end of an index key.
pub(super) fn seq_of(key: &[u8]) -> u64 {
    let tail: [u8; 8] = key[key.len().saturating_sub(8)..].try_into().unwrap_or_default();
    u64::from_be_bytes(tail)
}

/// One name's index entries in page order.
type Run<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], ())>> + 't>;
/// Stored events (key, record) in some order.
type Records<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>> + 't>;

impl Store {
    /// A page of `tenant`'s events that `filter` lets through (see `EventLog::history`).
    pub fn history(
        &self,
        tenant: &str,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        let rtxn = self.env.read_txn()?;
        if filter.is_everything() {
            return self.history_of_tenant(&rtxn, tenant, start, limit, max_bytes);
        }
        // One run of sequences per name, each in page order, merged through a heap keyed so that
        // the next event of the page is always on top.
        let order = |seq: u64| match start {
            PageStart::Before(_) => seq,
            PageStart::After(_) => u64::MAX - seq,
        };
        let mut runs = Vec::new();
        let mut heap = BinaryHeap::new();
        for name in self.names_matching(&rtxn, tenant, filter)? {
            let mut run = self.name_run(&rtxn, tenant, &name, start)?;
            if let Some(entry) = run.next() {
                heap.push((order(seq_of(entry?.0)), runs.len()));
            }
            runs.push(run);
        }
        let mut page = HistoryPage::default();
        let mut bytes = 0;
        while page.events.len() < limit && bytes < max_bytes {
            let Some((key, index)) = heap.pop() else { break };
            let seq = match start {
                PageStart::Before(_) => key,
                PageStart::After(_) => u64::MAX - key,
            };
            let raw = self.events.remap_data_type::<heed::types::Bytes>();
            if let Some(record) = raw.get(&rtxn, &event_key(tenant, seq))? {
                bytes += record.len();
                page.events.push(decode(record)?);
            }
            if let Some(entry) = runs[index].next() {
                heap.push((order(seq_of(entry?.0)), index));
            }
        }
        page.more = !heap.is_empty();
        Ok(page)
    }

    /// A page of every event of `tenant`: a range of the event table itself.
    fn history_of_tenant(
        &self,
        rtxn: &heed::RoTxn,
        tenant: &str,
        start: PageStart,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        let raw = self.events.remap_data_type::<heed::types::Bytes>();
        let mut entries: Records = match start {
            PageStart::Before(before) => {
                let (low, high) = (event_key(tenant, 0), event_key(tenant, before));
                Box::new(raw.rev_range(rtxn, &(Bound::Included(&low[..]), Bound::Excluded(&high[..])))?)
            }
            PageStart::After(after) => {
                let (low, high) = (event_key(tenant, after), event_key(tenant, u64::MAX));
                Box::new(raw.range(rtxn, &(Bound::Excluded(&low[..]), Bound::Included(&high[..])))?)
            }
        };
        let mut page = HistoryPage::default();
        let mut bytes = 0;
        while page.events.len() < limit && bytes < max_bytes {
            let Some(entry) = entries.next() else {
                return Ok(page);
            };
            let (_, record) = entry?;
            bytes += record.len();
            page.events.push(decode(record)?);
        }
        page.more = entries.next().is_some();
        Ok(page)
    }

    /// The names of `tenant` that `filter` lets through: its exact names, and the stored names
    /// that start with one of its prefixes.
    fn names_matching(
        &self,
        rtxn: &heed::RoTxn,
        tenant: &str,
        filter: &EventFilter,
    ) -> StorageResult<Vec<String>> {
        let (exact, prefixes) = filter.items();
        let mut names: Vec<String> = exact.map(str::to_owned).collect();
        let tenant_key = tenant_prefix(tenant);
        for prefix in prefixes {
            let mut key = tenant_key.clone();
            key.extend_from_slice(prefix.as_bytes());
            for entry in self.latest.prefix_iter(rtxn, &key)? {
                let (key, _) = entry?;
                if let Ok(name) = std::str::from_utf8(&key[tenant_key.len()..]) {
                    names.push(name.to_owned());
                }
            }
        }
        // An exact name may also start with a prefix of the same filter.
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// `name`'s sequences in `tenant` from `start` on, in page order.
    fn name_run<'t>(
        &self,
        rtxn: &'t heed::RoTxn,
        tenant: &str,
        name: &str,
        start: PageStart,
    ) -> StorageResult<Run<'t>> {
        Ok(match start {
            PageStart::Before(before) => {
                let (low, high) = (name_key(tenant, name, 0), name_key(tenant, name, before));
                Box::new(
                    self.names
                        .rev_range(rtxn, &(Bound::Included(&low[..]), Bound::Excluded(&high[..])))?,
                )
            }
            PageStart::After(after) => {
                let (low, high) = (name_key(tenant, name, after), name_key(tenant, name, u64::MAX));
                Box::new(
                    self.names
                        .range(rtxn, &(Bound::Excluded(&low[..]), Bound::Included(&high[..])))?,
                )
            }
        })
    }

    /// Puts every stored event into the name index, once: a database written before the index
    /// existed gains it at its first start, in transactions of `INDEX_BATCH` events.
    pub(super) fn index_names_once(&self) -> StorageResult<()> {
        {
            let rtxn = self.env.read_txn()?;
            if self.meta.get(&rtxn, NAMES_INDEXED)?.is_some() {
                return Ok(());
            }
        }
        let raw = self.events.remap_data_type::<heed::types::Bytes>();
        let mut from: Option<Vec<u8>> = None;
        let mut indexed = 0usize;
        loop {
            let batch = {
                let rtxn = self.env.read_txn()?;
                let entries: Records = match &from {
                    None => Box::new(raw.iter(&rtxn)?),
                    Some(last) => {
                        let range = (Bound::Excluded(&last[..]), Bound::<&[u8]>::Unbounded);
                        Box::new(raw.range(&rtxn, &range)?)
                    }
                };
                let mut batch = Vec::with_capacity(INDEX_BATCH);
                for entry in entries.take(INDEX_BATCH) {
                    let (key, record) = entry?;
                    let event: Event = decode(record)?;
                    let prefix = key[..key.len() - 8].to_vec();
                    batch.push((
                        key.to_vec(),
                        name_key_after_prefix(prefix, &event.event, seq_of(key)),
                    ));
                }
                batch
            };
            let Some((last, _)) = batch.last() else { break };
            from = Some(last.clone());
            let mut wtxn = self.env.write_txn()?;
            for (_, key) in &batch {
                self.names.put(&mut wtxn, key, &())?;
            }
            wtxn.commit()?;
            indexed += batch.len();
        }
        let mut wtxn = self.env.write_txn()?;
        self.meta.put(&mut wtxn, NAMES_INDEXED, b"1")?;
        wtxn.commit()?;
        if indexed > 0 {
            tracing::info!(
                events = indexed,
                "indexed the stored events by name (once, for history pages)"
            );
        }
        Ok(())
    }
}

fn decode(record: &[u8]) -> StorageResult<Event> {
    serde_json::from_slice(record).map_err(|e| StorageError::from(heed::Error::Decoding(e.into())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::NewEvent;

    fn store_with(dir: &std::path::Path, events: &[(&str, &str)]) -> Store {
        let store = Store::open(dir, 64).unwrap();
        let batch = events
            .iter()
            .map(|(tenant, name)| NewEvent {
                tenant_name: (*tenant).into(),
                username: "u".into(),
                event: (*name).into(),
                data: json!("x".repeat(100)),
                timestamp: 0,
                reads: Vec::new(),
                idempotency_key: None,
                tenant_max_bytes: 0,
            })
            .collect();
        store.append_batch(batch, &mut Default::default()).unwrap();
        store
    }

    /// Every page from `start` on, following `more`, as (name, seq) per page.
    fn pages(store: &Store, filter: &str, start: PageStart, limit: usize) -> Vec<Vec<(String, u64)>> {
        let filter = EventFilter::parse(filter).unwrap();
        let mut pages = Vec::new();
        let mut start = start;
        loop {
            let page = store.history("t", &filter, start, limit, MAX_TEST_BYTES).unwrap();
            let last = page.events.last().map(|e| e.seq);
            pages.push(page.events.iter().map(|e| (e.event.clone(), e.seq)).collect());
            match (page.more, last, start) {
                (true, Some(last), PageStart::Before(_)) => start = PageStart::Before(last),
                (true, Some(last), PageStart::After(_)) => start = PageStart::After(last),
                _ => return pages,
            }
        }
    }

    const MAX_TEST_BYTES: usize = 1 << 20;

    fn sample() -> Vec<(&'static str, &'static str)> {
        let mut events = Vec::new();
        for n in 0..30 {
            events.push((
                "t",
                ["room.1.msg", "room.2.msg", "room.1.typing", "profile"][n % 4],
            ));
            events.push(("other", "room.1.msg"));
        }
        events
    }

    #[test]
    fn pages_merge_the_names_a_filter_reaches_in_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &sample());
        let newest_first = pages(&store, "room.1.*,profile", PageStart::Before(u64::MAX), 7);
        let flat: Vec<(String, u64)> = newest_first.concat();
        // Tenant t's events are 1..=30, names cycling through the four; room.2.msg is left out.
        let expected: Vec<(String, u64)> = (1..=30u64)
            .rev()
            .map(|seq| {
                (
                    ["room.1.msg", "room.2.msg", "room.1.typing", "profile"][(seq as usize - 1) % 4]
                        .to_owned(),
                    seq,
                )
            })
            .filter(|(name, _)| name != "room.2.msg")
            .collect();
        assert_eq!(flat, expected);
        assert_eq!(
            newest_first.iter().map(Vec::len).collect::<Vec<_>>(),
            [7, 7, 7, 1]
        );
        let oldest_first: Vec<(String, u64)> =
            pages(&store, "room.1.*,profile", PageStart::After(0), 7).concat();
        assert_eq!(oldest_first, expected.into_iter().rev().collect::<Vec<_>>());
        // Everything, and one exact name, below an id.
        let all = pages(&store, "*", PageStart::Before(11), 4).concat();
        assert_eq!(
            all.iter().map(|e| e.1).collect::<Vec<_>>(),
            (1..=10).rev().collect::<Vec<_>>()
        );
        let profile = pages(&store, "profile", PageStart::After(4), 100);
        assert_eq!(profile.len(), 1, "no next page when all fit");
        assert_eq!(
            profile[0].iter().map(|e| e.1).collect::<Vec<_>>(),
            [8, 12, 16, 20, 24, 28]
        );
        assert_eq!(
            pages(&store, "nothing.*", PageStart::Before(u64::MAX), 5),
            [vec![]]
        );
    }

    #[test]
    fn a_page_stops_at_its_byte_bound_with_at_least_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &sample());
        let filter = EventFilter::parse("room.1.*").unwrap();
        let page = store
            .history("t", &filter, PageStart::After(0), 100, 300)
            .unwrap();
        assert!(page.more);
        assert!(
            (2..=3).contains(&page.events.len()),
            "300 bytes hold one or two records of about 250 bytes: {}",
            page.events.len()
        );
        let page = store.history("t", &filter, PageStart::After(0), 100, 1).unwrap();
        assert_eq!(page.events.len(), 1);
    }

    #[test]
    fn a_database_from_before_the_index_gains_it_once_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &sample());
        // Forget the index, as a database written by an older Broker has none.
        let mut wtxn = store.env.write_txn().unwrap();
        store.names.clear(&mut wtxn).unwrap();
        store.meta.delete(&mut wtxn, NAMES_INDEXED).unwrap();
        wtxn.commit().unwrap();
        let before = pages(&store, "profile", PageStart::After(0), 100).concat();
        assert!(before.is_empty(), "without the index the names have no runs");
        drop(store);
        let store = Store::open(dir.path(), 64).unwrap();
        let after = pages(&store, "profile", PageStart::After(0), 100).concat();
        assert_eq!(
            after.iter().map(|e| e.1).collect::<Vec<_>>(),
            [4, 8, 12, 16, 20, 24, 28]
        );
    }
}
