//! One subscriber's exact record of which (publisher, sequence number) pairs it has seen. Publishers
//! number their events 1, 2, 3…, so a bit per number replaces a hash set of pairs: duplicates and
//! out-of-order arrivals are still counted exactly, at a fraction of the cost per event.

/// Publishers and sequence numbers past these are not this run's: ignored rather than tracked, so
/// a stray event cannot make a subscriber allocate without bound.
const MAX_PUBLISHERS: u64 = 1 << 16;
const MAX_SEQUENCE: u64 = 1 << 28;

#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Seen for the first time; `in_order` unless a higher number from that publisher came first.
    New {
        in_order: bool,
    },
    Duplicate,
}

#[derive(Default)]
pub struct Seen {
    publishers: Vec<Publisher>,
}

#[derive(Default)]
struct Publisher {
    /// Bit `n` is set once sequence number `n` has arrived.
    bits: Vec<u64>,
    highest: u64,
}

impl Seen {
    /// Records one arrival; None when the numbers are out of the range a run can produce.
    pub fn record(&mut self, publisher: u64, n: u64) -> Option<Arrival> {
        if publisher >= MAX_PUBLISHERS || n >= MAX_SEQUENCE {
            return None;
        }
        let publisher = publisher as usize;
        if self.publishers.len() <= publisher {
            self.publishers.resize_with(publisher + 1, Publisher::default);
        }
        let seen = &mut self.publishers[publisher];
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        if seen.bits.len() <= word {
            // Doubling keeps growth amortised as the numbers climb.
            seen.bits.resize((word + 1).max(seen.bits.len() * 2), 0);
        }
        if seen.bits[word] & bit != 0 {
            return Some(Arrival::Duplicate);
        }
        seen.bits[word] |= bit;
        let in_order = n >= seen.highest;
        seen.highest = seen.highest.max(n);
        Some(Arrival::New { in_order })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_and_disorder_exactly() {
        let mut seen = Seen::default();
        let new = |in_order| Some(Arrival::New { in_order });
        assert_eq!(seen.record(0, 1), new(true));
        assert_eq!(seen.record(0, 3), new(true));
        assert_eq!(seen.record(0, 2), new(false));
        assert_eq!(seen.record(0, 3), Some(Arrival::Duplicate));
        assert_eq!(seen.record(5, 1000), new(true));
        assert_eq!(seen.record(5, 1000), Some(Arrival::Duplicate));
        assert_eq!(seen.record(5, 999), new(false));
        assert_eq!(seen.record(0, 4), new(true));
        assert_eq!(seen.record(MAX_PUBLISHERS, 1), None);
        assert_eq!(seen.record(0, MAX_SEQUENCE), None);
    }
}
