//! The connection manager. Nothing else closes a connection that a protocol keeps busy
//! now and then (identify, the DHT, gossip), so on a network of a hundred nodes each one
//! ended up connected to nearly all the others, paying every connection's buffers.
//!
//! Every [`TRIM_EVERY`] (or [`ConnectionTarget::idle`] if shorter), once more than
//! [`ConnectionTarget::high`] peers are connected, the least recently active peers are
//! disconnected until [`ConnectionTarget::low`] are left. Never trimmed: a peer connected
//! or active (a request or a gossip message either way) less than
//! [`ConnectionTarget::idle`] ago, and the peers the node needs:
//!
//! - its closest [`NEIGHBOURS`] in the routing table (by XOR distance; at most
//!   [`ConnectionTarget::low`]), which keep the DHT's lookups short and its records where
//!   peers look for them;
//! - the gossip mesh of every hosted document (6 to 12 replicas each), through which
//!   writes travel;
//! - relays it holds reservations on or reaches peers through, and peers that hold a
//!   reservation or a circuit on its relay service;
//! - peers with a transfer in flight: a request sent and not answered, their input in the
//!   node's hands, or an answer not yet taken.
//!
//! Protected peers can exceed the target; the target then only stops growth.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::{kad, PeerId};
use tokio::time::Instant;
use tracing::debug;

use super::EventLoop;
use crate::config::ConnectionTarget;

/// How often the connection count is checked, at most.
pub(super) const TRIM_EVERY: Duration = Duration::from_secs(10);
/// Closest routing-table peers kept connected.
pub(super) const NEIGHBOURS: usize = 16;

struct Seen {
    since: Instant,
    active: Instant,
}

/// When each connected peer connected and was last active. An entry lives exactly as long
/// as the peer has a connection, so the map is bounded by the connection limit.
#[derive(Default)]
pub(super) struct Activity {
    peers: HashMap<PeerId, Seen>,
    last_trim: Option<Instant>,
    trimmed: u64,
}

impl Activity {
    /// A connection to `peer` opened: a new one counts as new (a trimmed peer that comes
    /// back before its old connection has closed is not trimmed again at once).
    pub(super) fn connected(&mut self, peer: PeerId, now: Instant) {
        self.peers.insert(
            peer,
            Seen {
                since: now,
                active: now,
            },
        );
    }

    pub(super) fn disconnected(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// `peer` sent or was sent something just now.
    pub(super) fn active(&mut self, peer: &PeerId, now: Instant) {
        if let Some(s) = self.peers.get_mut(peer) {
            s.active = now;
        }
    }

    /// Peers disconnected by the manager since start.
    pub(super) fn trimmed(&self) -> u64 {
        self.trimmed
    }

    /// Whether a check is due (and, if so, the next one is `every` away).
    fn due(&mut self, now: Instant, every: Duration) -> bool {
        if self
            .last_trim
            .is_some_and(|last| now.duration_since(last) < every)
        {
            return false;
        }
        self.last_trim = Some(now);
        true
    }

    /// The peers to disconnect: none while at most `target.high` are connected, else the
    /// least recently active of those neither protected nor recent, down to `target.low`.
    pub(super) fn select(
        &self,
        now: Instant,
        target: ConnectionTarget,
        keep: &HashSet<PeerId>,
    ) -> Vec<PeerId> {
        let connected = self.peers.len();
        if connected <= target.high {
            return Vec::new();
        }
        let mut idle: Vec<(Instant, PeerId)> = self
            .peers
            .iter()
            .filter(|(p, s)| {
                !keep.contains(p)
                    && now.duration_since(s.since) >= target.idle
                    && now.duration_since(s.active) >= target.idle
            })
            .map(|(p, s)| (s.active, *p))
            .collect();
        idle.sort();
        idle.into_iter()
            .take(connected.saturating_sub(target.low))
            .map(|(_, p)| p)
            .collect()
    }
}

impl EventLoop {
    /// Disconnects idle peers beyond the target (see the module's comment).
    pub(super) fn trim_connections(&mut self) {
        let now = Instant::now();
        let every = TRIM_EVERY.min(self.target.idle);
        if !self.activity.due(now, every) || self.activity.peers.len() <= self.target.high {
            return;
        }
        let keep = self.protected();
        let trim = self.activity.select(now, self.target, &keep);
        if trim.is_empty() {
            return;
        }
        debug!(
            connected = self.activity.peers.len(),
            protected = keep.len(),
            trimming = trim.len(),
            "closing idle connections beyond the target"
        );
        for peer in trim {
            self.activity.trimmed += 1;
            // Closing is asynchronous: the peer leaves `activity` on its ConnectionClosed.
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// The connected peers the manager never trims.
    fn protected(&mut self) -> HashSet<PeerId> {
        let mut keep: HashSet<PeerId> = HashSet::new();
        let local = kad::KBucketKey::from(*self.swarm.local_peer_id());
        let mut table: Vec<(kad::KBucketDistance, PeerId)> = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for e in bucket.iter() {
                let peer = *e.node.key.preimage();
                if self.activity.peers.contains_key(&peer) {
                    table.push((e.node.key.distance(&local), peer));
                }
            }
        }
        table.sort();
        // Never more neighbours than the low mark (a small device keeps 8 peers).
        let neighbours = NEIGHBOURS.min(self.target.low);
        keep.extend(table.into_iter().take(neighbours).map(|(_, p)| p));
        keep.extend(self.swarm.behaviour().gossipsub.all_mesh_peers().copied());
        keep.extend(self.relays.in_use());
        keep.extend(self.addrs.relays_in_use());
        keep.extend(self.outbound.values().copied());
        keep.extend(
            self.activity
                .peers
                .keys()
                .copied()
                .filter(|p| self.budget.in_flight(p).1 > 0 || self.out_budget.in_flight(p).1 > 0),
        );
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(low: usize, high: usize) -> ConnectionTarget {
        ConnectionTarget {
            low,
            high,
            idle: Duration::from_secs(30),
        }
    }

    /// `n` peers connected at `t0`, peer i last active at `t0 + i` seconds.
    fn peers(n: usize, t0: Instant) -> (Activity, Vec<PeerId>) {
        let mut a = Activity::default();
        let ids: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        for (i, p) in ids.iter().enumerate() {
            a.connected(*p, t0);
            a.active(p, t0 + Duration::from_secs(i as u64));
        }
        (a, ids)
    }

    #[test]
    fn nothing_is_trimmed_up_to_the_high_mark() {
        let t0 = Instant::now();
        let (a, _) = peers(8, t0);
        let late = t0 + Duration::from_secs(3600);
        assert!(a.select(late, target(2, 8), &HashSet::new()).is_empty());
    }

    #[test]
    fn the_least_recently_active_go_first_down_to_the_low_mark() {
        let t0 = Instant::now();
        let (a, ids) = peers(10, t0);
        let late = t0 + Duration::from_secs(3600);
        let mut got = a.select(late, target(4, 8), &HashSet::new());
        got.sort();
        let mut want = ids[..6].to_vec();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn protected_new_and_active_peers_stay() {
        let t0 = Instant::now();
        let (mut a, ids) = peers(10, t0);
        let now = t0 + Duration::from_secs(100);
        // Protected, active just now, and connected just now.
        let keep: HashSet<PeerId> = [ids[0]].into();
        a.active(&ids[1], now - Duration::from_secs(1));
        let newcomer = PeerId::random();
        a.connected(newcomer, now);
        let got = a.select(now, target(2, 8), &keep);
        assert_eq!(got.len(), 8, "{got:?}");
        for p in [ids[0], ids[1], newcomer] {
            assert!(!got.contains(&p));
        }
    }

    #[test]
    fn when_all_are_protected_none_go() {
        let t0 = Instant::now();
        let (a, ids) = peers(10, t0);
        let keep: HashSet<PeerId> = ids.iter().copied().collect();
        let late = t0 + Duration::from_secs(3600);
        assert!(a.select(late, target(2, 4), &keep).is_empty());
    }

    #[test]
    fn disconnected_peers_leave_the_table() {
        let t0 = Instant::now();
        let (mut a, ids) = peers(3, t0);
        for p in &ids {
            a.disconnected(p);
        }
        a.active(&ids[0], t0);
        assert!(a.peers.is_empty());
    }

    #[test]
    fn checks_are_spaced() {
        let t0 = Instant::now();
        let mut a = Activity::default();
        assert!(a.due(t0, TRIM_EVERY));
        assert!(!a.due(t0 + Duration::from_secs(1), TRIM_EVERY));
        assert!(a.due(t0 + TRIM_EVERY, TRIM_EVERY));
    }
}
