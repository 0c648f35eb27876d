//! The allow/block list as a network behaviour: blocked peers, and an optional allow-only
//! set, are refused at connection time, and existing connections that a rule change
//! forbids are closed. Testnet partitions are built from it.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll, Waker};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is not allowed by the allow/block list")]
pub struct NotAllowed(pub PeerId);

/// Most peers blocked at once (the list is kept in memory and shown by `status`).
pub const MAX_BLOCKED: usize = 10_000;

#[derive(Default)]
pub struct Behaviour {
    blocked: HashSet<PeerId>,
    allow_only: Option<HashSet<PeerId>>,
    connected: HashSet<PeerId>,
    to_close: VecDeque<PeerId>,
    waker: Option<Waker>,
}

impl Behaviour {
    pub fn is_allowed(&self, peer: &PeerId) -> bool {
        !self.blocked.contains(peer) && self.allow_only.as_ref().is_none_or(|a| a.contains(peer))
    }

    pub fn blocked(&self) -> impl Iterator<Item = &PeerId> {
        self.blocked.iter()
    }

    pub fn allow_only_set(&self) -> Option<&HashSet<PeerId>> {
        self.allow_only.as_ref()
    }

    /// Blocks the peers; refuses them all (false) if that would pass [`MAX_BLOCKED`].
    pub fn block(&mut self, peers: Vec<PeerId>) -> bool {
        let new = peers.iter().filter(|p| !self.blocked.contains(p)).count();
        if self.blocked.len() + new > MAX_BLOCKED {
            return false;
        }
        self.blocked.extend(peers);
        self.enforce();
        true
    }

    pub fn unblock(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        for p in peers {
            self.blocked.remove(&p);
        }
    }

    pub fn allow_only(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.allow_only = Some(peers.into_iter().collect());
        self.enforce();
    }

    pub fn allow_all(&mut self) {
        self.allow_only = None;
    }

    /// Schedules every connection the rules now forbid for closing.
    fn enforce(&mut self) {
        let forbidden: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|p| !self.is_allowed(p))
            .copied()
            .collect();
        self.to_close.extend(forbidden);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn check(&self, peer: PeerId) -> Result<(), ConnectionDenied> {
        if self.is_allowed(&peer) {
            Ok(())
        } else {
            Err(ConnectionDenied::new(NotAllowed(peer)))
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = peer {
            self.check(peer)?;
        }
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connected.insert(e.peer_id);
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connected.remove(&e.peer_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        if let Some(peer) = self.to_close.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::All,
            });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
