//! How far the clocks of fresh writes are from this node's clock: the hybrid logical
//! clock (HLC) of every delta that arrives by gossip, moments after it was written, minus
//! the time here. A large offset means a clock is off, here or there; a delta more than
//! the allowed drift ahead is refused, which `lattice doctor` should make plain. Deltas
//! that come by anti-entropy are old news and say nothing about clocks.
//!
//! Hybrid clocks carry the largest time they have seen, so one fast clock drags the
//! writes of everyone who heard from it ahead too: the offsets say how far ahead the
//! network's time runs, and which author it was first seen from.

use std::collections::HashMap;

use lattice_crdt::ActorId;

/// Authors remembered; the one heard from longest ago goes first.
const MAX_AUTHORS: usize = 256;
/// Offsets older than this are not reported.
pub const RECENT_MS: u64 = 10 * 60 * 1_000;

/// The clock of `author`'s latest fresh write against this node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockOffset {
    pub author: ActorId,
    /// The write's HLC minus the time here when it arrived: positive when it was ahead.
    pub offset_ms: i64,
    /// When it arrived (ms since the Unix epoch).
    pub seen_ms: u64,
    /// The write was refused for being too far ahead.
    pub refused: bool,
}

#[derive(Default)]
pub(crate) struct Clocks(HashMap<ActorId, ClockOffset>);

impl Clocks {
    pub(crate) fn record(&mut self, author: ActorId, hlc_ms: u64, now_ms: u64, refused: bool) {
        if !self.0.contains_key(&author) && self.0.len() >= MAX_AUTHORS {
            if let Some(oldest) = self.0.values().min_by_key(|o| o.seen_ms).map(|o| o.author) {
                self.0.remove(&oldest);
            }
        }
        let offset_ms = (i128::from(hlc_ms) - i128::from(now_ms))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        self.0.insert(
            author,
            ClockOffset {
                author,
                offset_ms,
                seen_ms: now_ms,
                refused,
            },
        );
    }

    /// Offsets seen in the last [`RECENT_MS`], largest first.
    pub(crate) fn recent(&self, now_ms: u64) -> Vec<ClockOffset> {
        let mut out: Vec<ClockOffset> = self
            .0
            .values()
            .filter(|o| now_ms.saturating_sub(o.seen_ms) <= RECENT_MS)
            .cloned()
            .collect();
        out.sort_by_key(|o| std::cmp::Reverse(o.offset_ms.unsigned_abs()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_write_per_author_counts_and_old_ones_fade() {
        let mut c = Clocks::default();
        let (a, b) = (ActorId([1; 32]), ActorId([2; 32]));
        c.record(a, 1_000, 1_050, false);
        c.record(b, 91_000, 1_000, true);
        c.record(a, 2_000, 2_010, false);
        let r = c.recent(2_010);
        assert_eq!(
            r.iter()
                .map(|o| (o.author, o.offset_ms, o.refused))
                .collect::<Vec<_>>(),
            vec![(b, 90_000, true), (a, -10, false)]
        );
        assert_eq!(c.recent(1_000 + RECENT_MS + 1).len(), 1);
        assert!(c.recent(2_010 + RECENT_MS + 1).is_empty());
    }

    #[test]
    fn authors_are_bounded_and_extreme_clocks_do_not_overflow() {
        let mut c = Clocks::default();
        for i in 0..1_000u64 {
            let mut id = [0; 32];
            id[..8].copy_from_slice(&i.to_le_bytes());
            c.record(ActorId(id), u64::MAX, i, false);
        }
        assert_eq!(c.0.len(), MAX_AUTHORS);
        let r = c.recent(1_000);
        assert!(r.iter().all(|o| o.offset_ms == i64::MAX));
        // The newest were kept.
        assert!(r.iter().all(|o| o.seen_ms >= 1_000 - MAX_AUTHORS as u64));
    }
}
