//! What each peer may cost this node, and what it loses by misbehaving: the one place
//! that accounts for other peers.
//!
//! - [`Budget`]: bytes of a peer's requests and gossip handed to the node and not yet
//!   finished with, per peer and in total. Every [`crate::Event::Request`] and
//!   [`crate::Event::Gossip`] carries a [`Charge`] that gives its bytes back when dropped
//!   (after the response is sent, or the verdict given). Input that would exceed the budget
//!   is dropped before it reaches the node, so queues are bounded by bytes, not only by
//!   count; a peer's entry goes when its last charge does.
//! - [`RateLimit`]: requests and gossip messages per peer per second (a token bucket), so
//!   one peer cannot keep the node decoding and verifying however small its messages.
//! - [`Strikes`]: protocols report a peer that sent invalid input; one that earns
//!   [`MAX_STRIKES`] in a window is blocked (`lattice net unblock` lets it back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Refusals that get a peer blocked within one [`STRIKE_WINDOW`]. Honest peers are
/// refused now and then (a delta by a writer whose admission has not reached us yet),
/// never this often.
pub const MAX_STRIKES: u32 = 64;
/// Strikes are forgotten this long after a peer's first.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(600);
/// Peers whose strikes are counted at once; a full table counts no new peer.
const MAX_STRIKE_PEERS: usize = 4_096;

#[derive(Debug, Default)]
struct Inner {
    total: usize,
    per_peer: HashMap<PeerId, usize>,
    refused: u64,
}

/// In-flight input bytes, per peer and in total. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Budget {
    inner: Arc<Mutex<Inner>>,
    max_total: usize,
    max_per_peer: usize,
}

impl Budget {
    pub fn new(max_total: usize, max_per_peer: usize) -> Self {
        Budget {
            inner: Arc::default(),
            max_total,
            max_per_peer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Held for a few additions only; a panic while holding it cannot leave the
        // counts half-updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charges `bytes` of `peer`'s input, or `None` if that would exceed the peer's share
    /// or the total.
    pub fn charge(&self, peer: PeerId, bytes: usize) -> Option<Charge> {
        let mut g = self.lock();
        let mine = g.per_peer.get(&peer).copied().unwrap_or(0);
        if mine.saturating_add(bytes) > self.max_per_peer
            || g.total.saturating_add(bytes) > self.max_total
        {
            g.refused += 1;
            return None;
        }
        g.total += bytes;
        *g.per_peer.entry(peer).or_insert(0) += bytes;
        Some(Charge {
            budget: self.clone(),
            peer,
            bytes,
        })
    }

    /// Bytes charged now, in total and for `peer`.
    pub fn in_flight(&self, peer: &PeerId) -> (usize, usize) {
        let g = self.lock();
        (g.total, g.per_peer.get(peer).copied().unwrap_or(0))
    }

    /// Input dropped because it would have exceeded the budget.
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }

    /// Peers with bytes in flight.
    pub fn peers(&self) -> usize {
        self.lock().per_peer.len()
    }

    fn release(&self, peer: &PeerId, bytes: usize) {
        let mut g = self.lock();
        g.total -= bytes;
        if let Some(n) = g.per_peer.get_mut(peer) {
            *n -= bytes;
            if *n == 0 {
                g.per_peer.remove(peer);
            }
        }
    }
}

/// Bytes of one input held against a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Budget,
    peer: PeerId,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(&self.peer, self.bytes);
    }
}

/// At most one of something (a log line strangers can provoke) per interval; what is held
/// back is counted and told with the next one.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            next: None,
            suppressed: 0,
        }
    }

    /// True if one may go now; otherwise it is counted as suppressed.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return false;
        }
        self.next = Some(now + self.every);
        true
    }

    /// How many were held back since the last one that went, and starts counting again.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Messages per peer per second, as a token bucket: `burst` at once, refilled at `rate`.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    buckets: HashMap<PeerId, (f64, Instant)>,
    next_prune: Instant,
}

/// How often buckets that have refilled (and so say nothing) are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl RateLimit {
    pub fn new(per_second: u32, now: Instant) -> Self {
        let rate = f64::from(per_second.max(1));
        RateLimit {
            rate,
            burst: rate * 2.0,
            buckets: HashMap::new(),
            next_prune: now + PRUNE_EVERY,
        }
    }

    /// Takes one token from `peer`'s bucket at `now`; false if it is empty.
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_EVERY;
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self.buckets.entry(peer).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// Peers with a bucket that has not refilled.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Strikes per peer within a window.
#[derive(Debug, Default)]
pub struct Strikes(HashMap<PeerId, (Instant, u32)>);

impl Strikes {
    /// Records one strike against `peer` at `now`; true when it reaches [`MAX_STRIKES`]
    /// (exactly once per window).
    pub fn strike(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.0.len() >= MAX_STRIKE_PEERS && !self.0.contains_key(&peer) {
            self.0
                .retain(|_, (first, _)| now.duration_since(*first) < STRIKE_WINDOW);
            // Still full (throwaway identities with a strike each): forget the peer with
            // the fewest, so a full table never stops blocking.
            if self.0.len() >= MAX_STRIKE_PEERS {
                let least = self.0.iter().min_by_key(|(_, (_, n))| *n).map(|(p, _)| *p);
                if let Some(p) = least {
                    self.0.remove(&p);
                }
            }
        }
        let e = self.0.entry(peer).or_insert((now, 0));
        if now.duration_since(e.0) >= STRIKE_WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 == MAX_STRIKES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_through_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        assert!(t.allow(t0));
        assert_eq!(t.take_suppressed(), 0);
        for i in 1..=5 {
            assert!(!t.allow(t0 + Duration::from_secs(i)));
        }
        assert!(t.allow(t0 + Duration::from_secs(10)));
        assert_eq!(t.take_suppressed(), 5);
        assert_eq!(t.take_suppressed(), 0);
    }

    #[test]
    fn a_budget_bounds_each_peer_and_the_total_and_refills_on_drop() {
        let b = Budget::new(10, 6);
        let (p, q, r) = (PeerId::random(), PeerId::random(), PeerId::random());
        let c1 = b.charge(p, 4).unwrap();
        assert!(b.charge(p, 3).is_none(), "over the peer's share");
        let c2 = b.charge(q, 6).unwrap();
        assert!(b.charge(r, 1).is_none(), "over the total");
        assert_eq!(b.refused(), 2);
        drop(c1);
        assert_eq!(b.in_flight(&p), (6, 0));
        assert_eq!(b.peers(), 1, "a peer's entry goes with its last charge");
        let c3 = b.charge(r, 4).unwrap();
        drop((c2, c3));
        assert_eq!(b.in_flight(&q), (0, 0));
        assert_eq!(b.peers(), 0);
    }

    #[test]
    fn strikes_block_once_per_window_and_are_forgotten_after_it() {
        let mut s = Strikes::default();
        let p = PeerId::random();
        let t0 = Instant::now();
        let blocked = (0..MAX_STRIKES * 2).filter(|_| s.strike(p, t0)).count();
        assert_eq!(blocked, 1);
        let later = t0 + STRIKE_WINDOW;
        assert!(!s.strike(p, later));
        let blocked = (1..MAX_STRIKES).filter(|_| s.strike(p, later)).count();
        assert_eq!(blocked, 1);
    }

    #[test]
    fn a_peer_gets_its_burst_then_its_rate_and_full_buckets_are_forgotten() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(100, t0);
        let (p, q) = (PeerId::random(), PeerId::random());
        let burst = (0..1_000).filter(|_| r.allow(p, t0)).count();
        assert_eq!(burst, 200);
        // Another peer is not affected.
        assert!(r.allow(q, t0));
        // A second later, a second's worth.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..1_000).filter(|_| r.allow(p, t1)).count(), 100);
        // Long after, both buckets are full again and forgotten at the next prune.
        let later = t1 + PRUNE_EVERY * 2;
        assert!(r.allow(PeerId::random(), later));
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn the_strike_table_is_bounded() {
        let mut s = Strikes::default();
        let t0 = Instant::now();
        for _ in 0..MAX_STRIKE_PEERS + 100 {
            s.strike(PeerId::random(), t0);
        }
        assert_eq!(s.0.len(), MAX_STRIKE_PEERS);
        // A full table still counts, and still blocks, a peer that keeps at it.
        let p = PeerId::random();
        let blocked = (0..MAX_STRIKES * 2).filter(|_| s.strike(p, t0)).count();
        assert_eq!(blocked, 1);
        assert_eq!(s.0.len(), MAX_STRIKE_PEERS);
        // Once the window has passed, room is made for new peers.
        assert!(!s.strike(PeerId::random(), t0 + STRIKE_WINDOW));
        assert_eq!(s.0.len(), 1);
    }
}
