//! Pages of history on JetStream. A page reads only the subjects of its filter
//! (`NameTokens::filter_subjects`: each exact name's, and for a prefix of whole parts like
//! `room.42.*` the subjects under them), and nats-server skips the other subjects by its own index;
//! what they hold beyond the filter (`room.4*` reads all of `room.…`) is dropped here. A filter of
//! one name is read by batch direct gets from any replica; any other through an ordered consumer
//! (creating one is a round of the servers' meta group, milliseconds on a busy cluster).
//!
//! JetStream reads forward only. Newest first, a page is read from windows of sequences ending at
//! the `before` id, each at least four times as wide as the last and as wide as the density of
//! matches suggests (`next_window`), until enough events matched or the stream begins; each window
//! keeps only the newest matches it still needs, so memory stays one page.
//!
//! A read may be served by a server behind the others (a follower catching up). Read short, a page
//! would skip events: oldest first it would end before the newest this node has seen, newest first
//! a window would miss its newest events and the next page would start below them. So each read is
//! fenced (`JetStreamLog::reached_far_enough`): it must reach the sequence it is about, or the
//! leader must hold nothing on the page's subjects between where it reached and there, else it is
//! made again.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use async_nats::jetstream::consumer::DeliverPolicy;

use super::events::{FENCE_ATTEMPTS, JetStreamLog, Read, kept_behind};
use crate::event_log::{HistoryPage, PageStart};
use crate::filter::EventFilter;
use crate::model::Event;
use crate::storage::StorageResult;

/// The first window newest first, in stream sequences, at least.
const FIRST_WINDOW: u64 = 256;

/// The window newest first after one of `window` sequences that left `wanted` matches to find:
/// wide enough for them at the density of matches from its start to the stream's end (`matching`
/// of `span` sequences), half as wide again for luck, and at least four times as wide. A name
/// spread thinly over a large stream is found in the second window, not after many.
fn next_window(window: u64, wanted: u64, matching: u64, span: u64) -> u64 {
    let at_density = match matching {
        0 => 0,
        _ => wanted.saturating_mul(span).saturating_mul(3) / matching.saturating_mul(2),
    };
    window.saturating_mul(4).max(at_density)
}

impl JetStreamLog {
    /// Hands each event on `subjects` from sequence `from` on, with its stored size, to `each`
    /// until it breaks or none is left, as `scan_counting` does (with how many matched from `from`
    /// to the stream's end). One name's subject is read by batch direct gets from any replica,
    /// `per_batch` messages at a time (a batch does not stop where the caller will: asking for more
    /// than it needs reads further into the stream). Several subjects, or a wildcard, go through a
    /// consumer: a batch request takes one subject, and answers each request with a count of what
    /// matches after it, which for a wildcard over a large stream took seconds (nats-server 2.15).
    async fn read_from(
        &self,
        subjects: &[String],
        from: u64,
        per_batch: usize,
        fence: u64,
        each: impl FnMut(Event, usize) -> ControlFlow<()> + Send,
    ) -> StorageResult<(Read, u64)> {
        match subjects {
            [subject] if !subject.ends_with('>') => {
                (self.read_batches(subject, from, per_batch, usize::MAX, each)).await
            }
            _ => {
                let deliver_policy = DeliverPolicy::ByStartSequence { start_sequence: from };
                (self.scan_counting(subjects.to_vec(), deliver_policy, fence, each)).await
            }
        }
    }

    pub(super) async fn history_page(
        &self,
        tenant: &str,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        let limit = limit.max(1);
        let subjects = self.cluster().name_tokens.filter_subjects(tenant, filter);
        if subjects.is_empty() {
            // A filter that lets nothing through (a stream's narrowed to scopes that cover none).
            return Ok(HistoryPage::default());
        }
        match start {
            PageStart::After(after) => {
                self.oldest_first(filter, &subjects, after, limit, max_bytes)
                    .await
            }
            PageStart::Before(before) => {
                self.newest_first(filter, &subjects, before, limit, max_bytes)
                    .await
            }
        }
    }

    async fn oldest_first(
        &self,
        filter: &EventFilter,
        subjects: &[String],
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
            let read = self.read_from(subjects, start_sequence, limit + 1, fence, |event, size| {
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
            });
            let (read, _) = read.await?;
            if self
                .reached_far_enough(Some(subjects), read, fence, attempt)
                .await?
            {
                return Ok(page);
            }
        }
        Err(kept_behind(fence))
    }

    async fn newest_first(
        &self,
        filter: &EventFilter,
        subjects: &[String],
        before: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        let (first, last) = self.bounds().await?;
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
            let (newest, matching) = loop {
                attempt += 1;
                let mut newest: VecDeque<(Event, usize)> = VecDeque::with_capacity(wanted);
                let read = self.read_from(subjects, from, wanted, fence, |event, size| {
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
                let (read, matching) = read.await?;
                if self
                    .reached_far_enough(Some(subjects), read, fence, attempt)
                    .await?
                {
                    break (newest, matching);
                }
                if attempt == FENCE_ATTEMPTS {
                    return Err(kept_behind(fence));
                }
            };
            for older in newest.into_iter().rev() {
                found.push_front(older);
            }
            let still_wanted = (limit + 1).saturating_sub(found.len()) as u64;
            window = next_window(window, still_wanted, matching, last.saturating_sub(from) + 1);
            end = from;
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

#[cfg(test)]
mod tests {
    use super::next_window;

    #[test]
    fn a_thin_name_gets_a_window_for_what_is_still_wanted() {
        // 500 matches over the last 500,000 sequences, 100 still wanted: 150,000 wide.
        assert_eq!(next_window(400, 100, 500, 500_000), 150_000);
        // Dense, or nothing known: four times as wide.
        assert_eq!(next_window(400, 20, 200, 1_000), 1_600);
        assert_eq!(next_window(400, 100, 0, 1_000_000), 1_600);
        assert_eq!(next_window(u64::MAX / 2, u64::MAX, 1, u64::MAX), u64::MAX);
    }
}
