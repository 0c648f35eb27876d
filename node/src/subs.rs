//! Which connected peers subscribe to which gossip topics, bounded and indexed both ways,
//! so a peer's subscriptions cost O(its topics) to add or forget, whatever the others do.

use std::collections::{HashMap, HashSet};

use lattice_overlay::PeerId;

/// Subscriptions remembered in all.
pub const MAX_SUBS: usize = 100_000;
/// Topics remembered per peer: as many as gossipsub itself takes from one peer.
pub const MAX_TOPICS_PER_PEER: usize = lattice_overlay::MAX_TOPICS_PER_PEER;

#[derive(Debug, Default)]
pub struct Subscriptions {
    by_topic: HashMap<String, HashSet<PeerId>>,
    by_peer: HashMap<PeerId, HashSet<String>>,
    len: usize,
}

impl Subscriptions {
    /// Records that `peer` subscribes to `topic`; false if already known or over a bound.
    pub fn add(&mut self, topic: &str, peer: PeerId) -> bool {
        let mine = self.by_peer.get(&peer).map_or(0, HashSet::len);
        if self.len >= MAX_SUBS || mine >= MAX_TOPICS_PER_PEER {
            return false;
        }
        if !self
            .by_topic
            .entry(topic.to_owned())
            .or_default()
            .insert(peer)
        {
            return false;
        }
        self.by_peer
            .entry(peer)
            .or_default()
            .insert(topic.to_owned());
        self.len += 1;
        true
    }

    /// Records that `peer` left `topic`; false if it was not known to be there.
    pub fn remove(&mut self, topic: &str, peer: &PeerId) -> bool {
        let Some(peers) = self.by_topic.get_mut(topic) else {
            return false;
        };
        if !peers.remove(peer) {
            return false;
        }
        if peers.is_empty() {
            self.by_topic.remove(topic);
        }
        if let Some(topics) = self.by_peer.get_mut(peer) {
            topics.remove(topic);
            if topics.is_empty() {
                self.by_peer.remove(peer);
            }
        }
        self.len -= 1;
        true
    }

    /// Forgets a disconnected peer; returns the topics it was in.
    pub fn forget(&mut self, peer: &PeerId) -> Vec<String> {
        let topics: Vec<String> = self
            .by_peer
            .remove(peer)
            .map(|t| t.into_iter().collect())
            .unwrap_or_default();
        for topic in &topics {
            if let Some(peers) = self.by_topic.get_mut(topic) {
                if peers.remove(peer) {
                    self.len -= 1;
                }
                if peers.is_empty() {
                    self.by_topic.remove(topic);
                }
            }
        }
        topics
    }

    /// Peers known to subscribe to `topic`.
    pub fn peers(&self, topic: &str) -> Vec<PeerId> {
        self.by_topic
            .get(topic)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_bounded_per_peer_and_forgotten_with_the_peer() {
        let mut s = Subscriptions::default();
        let (p, q) = (PeerId::random(), PeerId::random());
        for i in 0..MAX_TOPICS_PER_PEER + 10 {
            s.add(&format!("t{i}"), p);
        }
        assert_eq!(s.len(), MAX_TOPICS_PER_PEER);
        assert!(s.add("t0", q));
        assert!(!s.add("t0", q), "already known");
        assert_eq!(s.forget(&p).len(), MAX_TOPICS_PER_PEER);
        assert_eq!(s.len(), 1);
        assert_eq!(s.peers("t0"), vec![q]);
        assert!(s.remove("t0", &q));
        assert!(s.is_empty() && s.by_topic.is_empty() && s.by_peer.is_empty());
    }

    #[test]
    fn the_total_is_bounded() {
        let mut s = Subscriptions::default();
        let mut added = 0;
        while added < MAX_SUBS + 5 {
            let p = PeerId::random();
            for i in 0..MAX_TOPICS_PER_PEER {
                s.add(&format!("t{i}"), p);
            }
            added += MAX_TOPICS_PER_PEER;
        }
        assert_eq!(s.len(), MAX_SUBS);
    }
}
