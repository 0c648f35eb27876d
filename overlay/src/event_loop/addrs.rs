//! The remote address of every open connection, by peer, and whether it goes through a
//! relay: what `lattice peers` shows, and which relayed connections a direct one has made
//! redundant. An entry lives exactly as long as its connection, so a peer that keeps
//! opening and closing connections cannot make the map grow.

use std::collections::HashMap;

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

struct Conn {
    id: ConnectionId,
    addr: Multiaddr,
    relayed: bool,
}

#[derive(Default)]
pub(super) struct ConnectedAddrs(HashMap<PeerId, Vec<Conn>>);

impl ConnectedAddrs {
    /// A connection opened. `relayed` comes from the endpoint: on the side that accepted a
    /// circuit the remote address is only `/p2p/PEER`, so the address cannot tell.
    pub(super) fn opened(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        addr: Multiaddr,
        relayed: bool,
    ) {
        self.0
            .entry(peer)
            .or_default()
            .push(Conn { id, addr, relayed });
    }

    pub(super) fn closed(&mut self, peer: &PeerId, conn: ConnectionId) {
        if let Some(list) = self.0.get_mut(peer) {
            list.retain(|c| c.id != conn);
            if list.is_empty() {
                self.0.remove(peer);
            }
        }
    }

    /// `peer`'s distinct addresses, oldest connection first.
    pub(super) fn of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for c in self.0.get(peer).into_iter().flatten() {
            if !out.contains(&c.addr) {
                out.push(c.addr.clone());
            }
        }
        out
    }

    /// Whether `peer` is connected, and only through relays.
    pub(super) fn relayed_only(&self, peer: &PeerId) -> bool {
        self.0
            .get(peer)
            .is_some_and(|list| list.iter().all(|c| c.relayed))
    }

    /// Relayed connections to peers that also have a direct one. Requests are spread over
    /// all of a peer's connections, so while these stay open part of every transfer would
    /// still squeeze through a relay (and count against its limits).
    pub(super) fn superseded(&self) -> Vec<(PeerId, ConnectionId)> {
        let mut out = Vec::new();
        for (peer, list) in &self.0 {
            if list.iter().any(|c| !c.relayed) {
                out.extend(list.iter().filter(|c| c.relayed).map(|c| (*peer, c.id)));
            }
        }
        out
    }

    /// The relays this node's relayed connections go through (as the dialling side
    /// names them; accepted circuits come through the relays it holds reservations on).
    pub(super) fn relays_in_use(&self) -> Vec<PeerId> {
        self.0
            .values()
            .flatten()
            .filter(|c| c.relayed)
            .filter_map(|c| super::circuit_relay(&c.addr))
            .collect()
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
        m.opened(peer, ConnectionId::new_unchecked(0), addr(1), false);
        for i in 1..=1_000 {
            let c = ConnectionId::new_unchecked(i);
            m.opened(peer, c, addr(1_000 + i as u32), i % 2 == 0);
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

    #[test]
    fn a_direct_connection_supersedes_the_relayed_ones_to_the_same_peer() {
        let mut m = ConnectedAddrs::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let circuit: Multiaddr = format!("/ip4/10.0.0.1/tcp/1/p2p/{b}/p2p-circuit")
            .parse()
            .unwrap();
        let direct: Multiaddr = "/ip4/10.0.0.2/udp/2/quic-v1".parse().unwrap();
        let id = ConnectionId::new_unchecked;
        // `a` accepted a circuit (its remote address names no relay); `b` we dialled.
        m.opened(a, id(1), format!("/p2p/{a}").parse().unwrap(), true);
        m.opened(b, id(2), circuit, true);
        assert!(m.relayed_only(&a) && m.relayed_only(&b));
        assert!(m.superseded().is_empty());
        m.opened(b, id(3), direct, false);
        assert!(!m.relayed_only(&b));
        assert_eq!(m.superseded(), vec![(b, id(2))]);
        m.closed(&b, id(2));
        assert!(m.superseded().is_empty());
        assert!(m.relayed_only(&a));
        assert!(!m.relayed_only(&PeerId::random()));
    }
}
