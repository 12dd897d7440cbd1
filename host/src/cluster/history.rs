//! Pages of history on JetStream. A filter of one exact name reads that name's subject only, and
//! nats-server skips the other subjects by its own index; any other filter reads the tenant's
//! subjects and keeps the matching events (names are base64url-encoded tokens, so a prefix of a
//! name is no prefix of its subject).
//!
//! JetStream reads forward only. Newest first, a page is read from windows of sequences ending at
//! the `before` id, each four times as wide as the last, until enough events matched or the stream
//! begins; each window keeps only the newest matches it still needs, so memory stays one page.
//!
//! A read may be served by a server behind the others (a follower catching up). Read short, a page
//! would skip events: oldest first it would end before the newest this node has seen, newest first
//! a window would miss its newest events and the next page would start below them. So each read is
//! fenced (`JetStreamLog::reached_far_enough`): it must reach the sequence it is about, or the
//! tenant must have nothing between where it reached and there, else it is made again.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use async_nats::jetstream::consumer::DeliverPolicy;

use super::events::{FENCE_ATTEMPTS, JetStreamLog, kept_behind};
use super::subjects;
use crate::event_log::{HistoryPage, PageStart};
use crate::filter::EventFilter;
use crate::model::Event;
use crate::storage::StorageResult;

/// The first window newest first, in stream sequences, at least.
const FIRST_WINDOW: u64 = 256;

/// The subject to read for `filter`'s events of `tenant`.
fn subject_for(tenant: &str, filter: &EventFilter) -> String {
    let (mut exact, mut prefixes) = filter.items();
    match (exact.next(), exact.next(), prefixes.next()) {
        (Some(name), None, None) => subjects::event_subject(tenant, name),
        _ => subjects::tenant_subjects(tenant),
    }
}

impl JetStreamLog {
    pub(super) async fn history_page(
        &self,
        tenant: &str,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        let limit = limit.max(1);
        match start {
            PageStart::After(after) => self.oldest_first(tenant, filter, after, limit, max_bytes).await,
            PageStart::Before(before) => self.newest_first(tenant, filter, before, limit, max_bytes).await,
        }
    }

    async fn oldest_first(
        &self,
        tenant: &str,
        filter: &EventFilter,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        let Some(start_sequence) = after.checked_add(1) else {
            return Ok(HistoryPage::default());
        };
        // As far as this node has seen: a page that ends must have looked that far.
        let fence = self.tail_position();
        for attempt in 1..=FENCE_ATTEMPTS {
            let (mut page, mut bytes) = (HistoryPage::default(), 0);
            let deliver_policy = DeliverPolicy::ByStartSequence { start_sequence };
            let read = self.scan(
                subject_for(tenant, filter),
                deliver_policy,
                fence,
                |event, size| {
                    if !filter.matches(&event.event) {
                        return ControlFlow::Continue(());
                    }
                    if page.events.len() >= limit || bytes >= max_bytes {
                        // One more match than the page holds: there is a next page.
                        page.more = true;
                        return ControlFlow::Break(());
                    }
                    bytes += size;
                    page.events.push(event);
                    ControlFlow::Continue(())
                },
            );
            if self
                .reached_far_enough(Some(tenant), read.await?, fence, attempt)
                .await?
            {
                return Ok(page);
            }
        }
        Err(kept_behind(fence))
    }

    async fn newest_first(
        &self,
        tenant: &str,
        filter: &EventFilter,
        before: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        let (first, last) = self.bounds().await?;
        let subject = subject_for(tenant, filter);
        // Matches below `end`, oldest first, with their sizes: at most one more than the page.
        let mut found: VecDeque<(Event, usize)> = VecDeque::new();
        let mut end = before.min(last.saturating_add(1));
        let mut window = FIRST_WINDOW.max(4 * limit as u64);
        while found.len() <= limit && end > first.max(1) {
            let from = end.saturating_sub(window).max(first.max(1));
            let wanted = limit + 1 - found.len();
            // This window's newest `wanted` matches, oldest first; the window's read must reach its
            // last sequence (the leader has it: `end` is at most its last sequence + 1).
            let fence = end - 1;
            let mut attempt = 0;
            let newest = loop {
                attempt += 1;
                let mut newest: VecDeque<(Event, usize)> = VecDeque::with_capacity(wanted);
                let deliver_policy = DeliverPolicy::ByStartSequence { start_sequence: from };
                let read = self.scan(subject.clone(), deliver_policy, fence, |event, size| {
                    if event.seq >= end {
                        return ControlFlow::Break(());
                    }
                    if filter.matches(&event.event) {
                        if newest.len() == wanted {
                            newest.pop_front();
                        }
                        newest.push_back((event, size));
                    }
                    ControlFlow::Continue(())
                });
                if self
                    .reached_far_enough(Some(tenant), read.await?, fence, attempt)
                    .await?
                {
                    break newest;
                }
                if attempt == FENCE_ATTEMPTS {
                    return Err(kept_behind(fence));
                }
            };
            for older in newest.into_iter().rev() {
                found.push_front(older);
            }
            end = from;
            window = window.saturating_mul(4);
        }
        let mut page = HistoryPage::default();
        let mut bytes = 0;
        while let Some((event, size)) = found.pop_back() {
            if page.events.len() >= limit || bytes >= max_bytes {
                page.more = true;
                break;
            }
            bytes += size;
            page.events.push(event);
        }
        Ok(page)
    }
}
