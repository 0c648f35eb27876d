//! Sync lag: how long peers' writes took to reach this node, from the write's hybrid
//! logical clock to its application here, kept per document for `doc info` (the metrics
//! keep the full histogram).

use std::collections::VecDeque;

/// Samples kept per document.
const SAMPLES: usize = 256;
/// Samples older than this are not reported.
pub const RECENT_MS: u64 = 10 * 60 * 1_000;

/// The lag of recent writes from peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LagStats {
    /// The latest write's lag.
    pub last_ms: u64,
    pub p50_ms: u64,
    pub max_ms: u64,
    /// Writes measured in the last [`RECENT_MS`] (at most [`SAMPLES`]).
    pub samples: usize,
}

/// The latest writes' lags, with when they were applied (ms since the epoch).
#[derive(Debug, Default)]
pub(super) struct Lags(VecDeque<(u64, u64)>);

impl Lags {
    pub fn record(&mut self, now_ms: u64, lag_ms: u64) {
        if self.0.len() == SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back((now_ms, lag_ms));
    }

    /// The writes applied in the last [`RECENT_MS`]; none if there were none.
    pub fn stats(&self, now_ms: u64) -> Option<LagStats> {
        let mut recent: Vec<u64> = self
            .0
            .iter()
            .filter(|(at, _)| now_ms.saturating_sub(*at) <= RECENT_MS)
            .map(|(_, lag)| *lag)
            .collect();
        let last_ms = *recent.last()?;
        recent.sort_unstable();
        Some(LagStats {
            last_ms,
            p50_ms: recent[(recent.len() - 1) / 2],
            max_ms: recent[recent.len() - 1],
            samples: recent.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_lags_are_summarised_and_old_ones_fade() {
        let mut l = Lags::default();
        assert_eq!(l.stats(0), None);
        for (at, lag) in [(1_000, 40), (2_000, 10), (3_000, 30)] {
            l.record(at, lag);
        }
        assert_eq!(
            l.stats(3_000),
            Some(LagStats {
                last_ms: 30,
                p50_ms: 30,
                max_ms: 40,
                samples: 3
            })
        );
        let later = 1_500 + RECENT_MS;
        assert_eq!(l.stats(later).map(|s| (s.samples, s.max_ms)), Some((2, 30)));
        assert_eq!(l.stats(3_001 + RECENT_MS), None);
        for i in 0..1_000 {
            l.record(4_000, i);
        }
        assert_eq!(l.stats(4_000).map(|s| s.samples), Some(SAMPLES));
    }
}
