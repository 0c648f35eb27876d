//! Per-peer circuit breakers. A peer whose requests keep failing (timeouts, refused or
//! closed streams, answers that do not decode) is not asked again for a while: requests to
//! it fail at once with [`crate::Error::Unavailable`], so callers that have other peers to
//! ask (blob fetches, anti-entropy, service lookups) move on without waiting out a
//! deadline each time. When the back-off ends, one request goes through as a probe: its
//! success closes the breaker, its failure opens it again for twice as long.
//!
//! States, per peer: closed (requests go; [`FAILURES_TO_OPEN`] failures in a row open
//! it), open (requests fail until the back-off ends), half-open (one probe in flight).
//! The table keeps only peers that failed recently and is bounded ([`MAX_PEERS`]); time
//! is passed in, so the tests run on a virtual clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Consecutive failures that open a peer's breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// The first back-off; each failed probe doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Peers tracked at most; past that, a new peer's failures are not counted.
pub const MAX_PEERS: usize = 4_096;
/// A closed breaker's failures are forgotten after this long without another.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What a breaker lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests go (with this many failures in a row so far).
    Closed { failures: u32 },
    /// Requests fail at once for this much longer.
    Open { remaining: Duration },
    /// One probe is in flight; other requests fail until it answers.
    HalfOpen,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half-open",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    /// While open: when the next probe may go, and the back-off that set it.
    open_until: Option<Instant>,
    backoff: Duration,
    probing: bool,
}

/// The peers whose breaker is open or half-open, shared with the overlay's handles so
/// callers choosing among peers can put them last ([`crate::Overlay::failing`]).
pub type Tripped = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<PeerId>>>;

/// Every peer's breaker.
#[derive(Debug, Default)]
pub struct Breakers {
    peers: HashMap<PeerId, Entry>,
    /// Times a breaker opened since start.
    opened: u64,
    tripped: Tripped,
}

impl Breakers {
    /// Whether a request to `peer` may go now. A half-open breaker lets exactly one
    /// through (the probe) and counts it as in flight.
    pub fn allow(&mut self, peer: &PeerId, now: Instant) -> bool {
        let Some(e) = self.peers.get_mut(peer) else {
            return true;
        };
        match e.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if e.probing => false,
            Some(_) => {
                e.probing = true;
                true
            }
        }
    }

    /// A request to `peer` was answered: its breaker closes. Whether it had one.
    pub fn success(&mut self, peer: &PeerId) -> bool {
        let had = self.peers.remove(peer);
        if had.is_some_and(|e| e.open_until.is_some()) {
            lock(&self.tripped).remove(peer);
        }
        had.is_some()
    }

    /// The shared set of peers whose breaker is not closed.
    pub fn tripped(&self) -> Tripped {
        self.tripped.clone()
    }

    /// A request to `peer` failed.
    pub fn failure(&mut self, peer: PeerId, now: Instant) {
        self.forget_old(now);
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            return;
        }
        let e = self.peers.entry(peer).or_insert(Entry {
            failures: 0,
            last_failure: now,
            open_until: None,
            backoff: FIRST_BACKOFF,
            probing: false,
        });
        e.last_failure = now;
        match e.open_until {
            // The probe failed: open again, for longer.
            Some(_) if e.probing => {
                e.backoff = (e.backoff * 2).min(MAX_BACKOFF);
                e.open_until = Some(now + e.backoff);
                e.probing = false;
                self.opened += 1;
                lock(&self.tripped).insert(peer);
            }
            // A request sent before the breaker opened: it is open already.
            Some(_) => {}
            None => {
                e.failures = e.failures.saturating_add(1);
                if e.failures >= FAILURES_TO_OPEN {
                    e.open_until = Some(now + e.backoff);
                    self.opened += 1;
                    lock(&self.tripped).insert(peer);
                }
            }
        }
    }

    pub fn state(&self, peer: &PeerId, now: Instant) -> State {
        match self.peers.get(peer) {
            None => State::Closed { failures: 0 },
            Some(e) => match e.open_until {
                None => State::Closed {
                    failures: e.failures,
                },
                Some(until) if now < until && !e.probing => State::Open {
                    remaining: until - now,
                },
                Some(_) if e.probing => State::HalfOpen,
                // The back-off is over and no probe has gone yet.
                Some(_) => State::Open {
                    remaining: Duration::ZERO,
                },
            },
        }
    }

    /// Times a breaker opened since start.
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// Closed breakers whose last failure is old are dropped: the table holds peers that
    /// fail now, not every peer that ever failed once.
    fn forget_old(&mut self, now: Instant) {
        if self.peers.len() < MAX_PEERS / 2 {
            return;
        }
        self.peers.retain(|_, e| {
            e.open_until.is_some() || now.duration_since(e.last_failure) < FORGET_AFTER
        });
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

/// The breakers in Prometheus: `lattice_peer_breaker` per peer whose breaker is not
/// closed (1 open, 2 half-open; a closed breaker's series is removed, so the family holds
/// at most [`MAX_PEERS`]), and `lattice_breakers_opened_total`.
#[derive(Clone, Debug, Default)]
pub(crate) struct BreakerMetrics {
    state: Family<PeerLabel, Gauge>,
    opened: Counter,
}

impl BreakerMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = BreakerMetrics::default();
        let sub = registry.sub_registry_with_prefix("lattice");
        sub.register(
            "peer_breaker",
            "Peers whose circuit breaker is not closed: 1 open, 2 half-open (one probe)",
            m.state.clone(),
        );
        sub.register(
            "breakers_opened",
            "Times a peer's circuit breaker opened",
            m.opened.clone(),
        );
        m
    }

    /// Shows `peer`'s breaker as it is now; `opened` says it just opened.
    pub(crate) fn show(&self, peer: &PeerId, state: State, opened: bool) {
        let label = PeerLabel {
            peer: peer.to_string(),
        };
        match state {
            State::Closed { .. } => {
                self.state.remove(&label);
            }
            State::Open { .. } => {
                self.state.get_or_create(&label).set(1);
            }
            State::HalfOpen => {
                self.state.get_or_create(&label).set(2);
            }
        }
        if opened {
            self.opened.inc();
        }
    }
}

/// Locks the shared set, whatever a panicking holder left (a set of ids cannot be left
/// half-written).
fn lock(t: &Tripped) -> std::sync::MutexGuard<'_, std::collections::HashSet<PeerId>> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(b: &mut Breakers, peer: PeerId, now: Instant) {
        for _ in 0..FAILURES_TO_OPEN {
            assert!(b.allow(&peer, now));
            b.failure(peer, now);
        }
    }

    #[test]
    fn a_peer_that_keeps_failing_is_cut_off_then_probed() {
        let t0 = Instant::now();
        let mut b = Breakers::default();
        let tripped = b.tripped();
        let p = PeerId::random();
        for i in 0..FAILURES_TO_OPEN - 1 {
            assert!(b.allow(&p, t0));
            b.failure(p, t0);
            assert_eq!(b.state(&p, t0), State::Closed { failures: i + 1 });
        }
        assert!(!lock(&tripped).contains(&p));
        b.failure(p, t0);
        assert!(lock(&tripped).contains(&p), "callers see it failing");
        assert_eq!(
            b.state(&p, t0),
            State::Open {
                remaining: FIRST_BACKOFF
            }
        );
        assert!(!b.allow(&p, t0 + FIRST_BACKOFF / 2));
        // The back-off is over: one probe, and only one.
        let later = t0 + FIRST_BACKOFF;
        assert!(b.allow(&p, later));
        assert_eq!(b.state(&p, later), State::HalfOpen);
        assert!(!b.allow(&p, later));
        assert!(b.success(&p));
        assert_eq!(b.state(&p, later), State::Closed { failures: 0 });
        assert!(!lock(&tripped).contains(&p));
        assert!(b.allow(&p, later));
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn failed_probes_double_the_back_off_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Breakers::default();
        let p = PeerId::random();
        open(&mut b, p, t0);
        let mut now = t0;
        let mut backoff = FIRST_BACKOFF;
        for _ in 0..10 {
            now += backoff;
            assert!(b.allow(&p, now), "a probe after {backoff:?}");
            b.failure(p, now);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            assert_eq!(b.state(&p, now), State::Open { remaining: backoff });
            assert!(!b.allow(&p, now + backoff - Duration::from_millis(1)));
        }
        assert_eq!(backoff, MAX_BACKOFF);
    }

    #[test]
    fn a_success_before_the_threshold_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breakers::default();
        let p = PeerId::random();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            b.failure(p, t0);
        }
        assert!(b.success(&p));
        assert!(!b.success(&p));
        b.failure(p, t0);
        assert_eq!(b.state(&p, t0), State::Closed { failures: 1 });
    }

    #[test]
    fn late_failures_of_requests_sent_earlier_do_not_extend_an_open_breaker() {
        let t0 = Instant::now();
        let mut b = Breakers::default();
        let p = PeerId::random();
        open(&mut b, p, t0);
        b.failure(p, t0 + Duration::from_secs(1));
        assert_eq!(
            b.state(&p, t0 + Duration::from_secs(1)),
            State::Open {
                remaining: FIRST_BACKOFF - Duration::from_secs(1)
            }
        );
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_old_closed_breakers() {
        let t0 = Instant::now();
        let mut b = Breakers::default();
        for _ in 0..MAX_PEERS + 10 {
            b.failure(PeerId::random(), t0);
        }
        assert_eq!(b.peers.len(), MAX_PEERS);
        // Much later, a new failure makes room by forgetting the old single failures.
        let late = t0 + FORGET_AFTER;
        let p = PeerId::random();
        b.failure(p, late);
        assert_eq!(b.peers.len(), 1);
        assert_eq!(b.state(&p, late), State::Closed { failures: 1 });
    }
}
