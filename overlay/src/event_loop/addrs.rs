//! The remote address of every open connection, by peer: what `lattice peers` shows.
//! An entry lives exactly as long as its connection, so a peer that keeps opening and
//! closing connections cannot make the map grow.

use std::collections::HashMap;

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

#[derive(Default)]
pub(super) struct ConnectedAddrs(HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>);

impl ConnectedAddrs {
    pub(super) fn opened(&mut self, peer: PeerId, conn: ConnectionId, addr: Multiaddr) {
        self.0.entry(peer).or_default().push((conn, addr));
    }

    pub(super) fn closed(&mut self, peer: &PeerId, conn: ConnectionId) {
        if let Some(list) = self.0.get_mut(peer) {
            list.retain(|(c, _)| *c != conn);
            if list.is_empty() {
                self.0.remove(peer);
            }
        }
    }

    /// `peer`'s distinct addresses, oldest connection first.
    pub(super) fn of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for (_, a) in self.0.get(peer).into_iter().flatten() {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycling_connections_does_not_grow_the_map() {
        let mut m = ConnectedAddrs::default();
        let peer = PeerId::random();
        let addr =
            |port: u32| -> Multiaddr { format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap() };
        // One connection stays open while a thousand others come and go.
        m.opened(peer, ConnectionId::new_unchecked(0), addr(1));
        for i in 1..=1_000 {
            let c = ConnectionId::new_unchecked(i);
            m.opened(peer, c, addr(1_000 + i as u32));
            m.closed(&peer, c);
        }
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.of(&peer),
            vec!["/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap()]
        );
        m.closed(&peer, ConnectionId::new_unchecked(0));
        assert_eq!(m.len(), 0);
        assert!(m.of(&peer).is_empty());
    }
}
