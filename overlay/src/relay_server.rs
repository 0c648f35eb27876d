//! The circuit relay v2 service, wrapped for two reasons.
//!
//! - libp2p's relay (0.22) keeps relayed connections in its connection list, where they
//!   have no relay handler (a placeholder instead), and tells every listed connection when
//!   the service is switched on or off. The placeholder then panics ("entered unreachable
//!   code") and takes its connection down: on a node behind a NAT, whose relay
//!   reservation confirms a circuit address as external and so switches the service on,
//!   this happened whenever that address came or went. The wrapper drops messages meant
//!   for relayed connections, which have nothing to hear.
//! - The service is offered only while the node is found reachable (AutoNAT, or
//!   `--reachability public`), not whenever libp2p has some external address: a
//!   `/p2p-circuit` address is one too, and a node that others reach only through a relay
//!   cannot relay for them. See [`RelayServer::serve`].

use std::collections::HashSet;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol as AddrPart;
use libp2p::relay;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

fn relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, AddrPart::P2pCircuit))
}

pub struct RelayServer {
    inner: relay::Behaviour,
    /// Connections that go through a relay themselves: the service has no handler there.
    relayed: HashSet<ConnectionId>,
}

impl RelayServer {
    /// Off until [`RelayServer::serve`] says otherwise.
    pub fn new(peer_id: PeerId, config: relay::Config) -> Self {
        let mut inner = relay::Behaviour::new(peer_id, config);
        inner.set_status(Some(relay::Status::Disable));
        RelayServer {
            inner,
            relayed: HashSet::new(),
        }
    }

    /// Offers the service (`true`) or withdraws it; circuits in place run to their limits.
    pub fn serve(&mut self, on: bool) {
        let status = if on {
            relay::Status::Enable
        } else {
            relay::Status::Disable
        };
        self.inner.set_status(Some(status));
    }
}

impl NetworkBehaviour for RelayServer {
    type ConnectionHandler = <relay::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = relay::Event;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if relayed(local_addr) {
            self.relayed.insert(id);
        }
        self.inner
            .handle_established_inbound_connection(id, peer, local_addr, remote_addr)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if relayed(addr) {
            self.relayed.insert(id);
        }
        self.inner
            .handle_established_outbound_connection(id, peer, addr, role_override, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(c) = &event {
            self.relayed.remove(&c.connection_id);
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::NotifyHandler {
                    handler: NotifyHandler::One(id),
                    ..
                }) if self.relayed.contains(&id) => continue,
                other => return other,
            }
        }
    }
}
