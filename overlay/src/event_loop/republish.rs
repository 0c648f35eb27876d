//! This node's provider records, published again on a spread-out, bounded schedule.
//!
//! libp2p-kad republishes every provided key together each interval: one DHT query and up
//! to 20 ADD_PROVIDER messages per key, all at once. A laptop hosting a thousand documents
//! and blobs sent that burst every ten minutes. Here each key comes due `interval` after
//! it was last published (less up to a tenth, so keys added together drift apart), and at
//! most one publication starts every `min_gap`. With more keys than `interval / min_gap`
//! the period stretches; records live twice the interval, which absorbs that up to 2x.
//! A publication that reached nobody (no peers yet, all unreachable) is tried again after
//! a back-off that starts at [`RETRY`] and doubles up to the interval.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// The first retry of a publication that reached no peer.
pub(super) const RETRY: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub(super) struct Republish {
    due: BTreeSet<(Instant, Vec<u8>)>,
    /// When each key is next due, and its current retry back-off (zero after a success).
    keys: HashMap<Vec<u8>, (Instant, Duration)>,
    interval: Duration,
    min_gap: Duration,
    next_start: Instant,
}

impl Republish {
    pub fn new(interval: Duration, min_gap: Duration, now: Instant) -> Self {
        Republish {
            due: BTreeSet::new(),
            keys: HashMap::new(),
            interval,
            min_gap,
            next_start: now,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    fn set(&mut self, key: Vec<u8>, at: Instant, backoff: Duration) {
        if let Some((old, _)) = self.keys.remove(&key) {
            self.due.remove(&(old, key.clone()));
        }
        self.due.insert((at, key.clone()));
        self.keys.insert(key, (at, backoff));
    }

    /// `key` was published at `now`, and reached at least one peer if `reached`.
    pub fn published(&mut self, key: Vec<u8>, reached: bool, now: Instant) {
        if reached {
            // Up to a tenth earlier, from the key's bytes: deterministic, yet spread.
            let spread = key
                .iter()
                .fold(0u32, |h, b| h.wrapping_mul(31) ^ u32::from(*b))
                % 1000;
            let early = self.interval / 10 * spread / 1000;
            self.set(key, now + self.interval - early, Duration::ZERO);
        } else {
            let last = self.keys.get(&key).map_or(Duration::ZERO, |k| k.1);
            let backoff = if last.is_zero() {
                RETRY
            } else {
                (last * 2).min(self.interval)
            };
            self.set(key, now + backoff, backoff);
        }
    }

    /// Stops publishing `key`.
    pub fn remove(&mut self, key: &[u8]) {
        if let Some((at, _)) = self.keys.remove(key) {
            self.due.remove(&(at, key.to_vec()));
        }
    }

    /// The next key due at `now`, if the gap since the last start allows one. The key
    /// stays scheduled until [`Republish::published`] says how it went; meanwhile it is due
    /// again one interval on, so a publication whose outcome is lost is not retried at once.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if now < self.next_start {
            return None;
        }
        let (at, key) = self.due.first()?.clone();
        if at > now {
            return None;
        }
        self.next_start = now + self.min_gap;
        let backoff = self.keys.get(&key).map_or(Duration::ZERO, |k| k.1);
        self.set(key.clone(), now + self.interval, backoff);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn keys_come_due_once_per_interval_and_no_faster_than_the_gap() {
        let t0 = Instant::now();
        let mut r = Republish::new(H, Duration::from_secs(1), t0);
        for k in 0..10u8 {
            r.published(vec![k], true, t0);
        }
        assert_eq!(
            r.take_due(t0 + Duration::from_secs(60)),
            None,
            "not yet due"
        );
        let late = t0 + H;
        let first = r.take_due(late).expect("due after the interval");
        assert_eq!(r.take_due(late), None, "one per gap");
        let second = r.take_due(late + Duration::from_secs(1)).expect("next gap");
        assert_ne!(first, second);
        // Nothing else is asked for while the remaining eight come due one per second.
        let mut taken = 2;
        for s in 2..20 {
            if r.take_due(late + Duration::from_secs(s)).is_some() {
                taken += 1;
            }
        }
        assert_eq!(taken, 10);
        assert_eq!(r.len(), 10);
    }

    #[test]
    fn a_publication_that_reached_nobody_is_retried_with_a_growing_back_off() {
        let t0 = Instant::now();
        let mut r = Republish::new(H, Duration::ZERO, t0);
        r.published(b"k".to_vec(), false, t0);
        assert_eq!(r.take_due(t0 + RETRY - Duration::from_secs(1)), None);
        let t1 = t0 + RETRY;
        assert_eq!(r.take_due(t1), Some(b"k".to_vec()));
        r.published(b"k".to_vec(), false, t1);
        assert_eq!(r.take_due(t1 + RETRY), None, "the back-off doubled");
        let t2 = t1 + RETRY * 2;
        assert_eq!(r.take_due(t2), Some(b"k".to_vec()));
        r.published(b"k".to_vec(), true, t2);
        assert_eq!(
            r.take_due(t2 + RETRY * 4),
            None,
            "a success waits the interval"
        );
        r.remove(b"k");
        assert_eq!(r.take_due(t2 + H * 2), None);
        assert_eq!(r.len(), 0);
    }
}
