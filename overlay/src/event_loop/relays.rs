//! Reachability and relays: what AutoNAT finds, relay slots this node reserves when it
//! cannot be reached, the relay it serves when it can, hole punches (DCUtR) and UPnP.
//!
//! A node that is private (found by AutoNAT, or forced by configuration) reserves slots
//! on up to [`RELAYS`] peers that speak the relay protocol and that it reached by dialling
//! them (so they are reachable at least from here). The reservation gives it a
//! `/p2p-circuit` address, which libp2p's relay client advertises and renews; a peer that
//! dials that address gets a relayed connection, which DCUtR then tries to upgrade to a
//! direct one. A relay that fails is left alone for [`RELAY_COOLDOWN`].
//!
//! The relay service is libp2p's, within the configured limits; libp2p offers it only
//! once the node has a confirmed external address, so a node behind a NAT does not.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol as AddrPart;
use libp2p::swarm::ConnectionId;
use libp2p::{autonat, dcutr, relay, Multiaddr, PeerId};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::EventLoop;
use crate::config::Reachability;
use crate::handle::Nat;

/// Relays a private node holds reservations on.
pub(super) const RELAYS: usize = 2;
/// How long a relay that failed is not asked again.
const RELAY_COOLDOWN: Duration = Duration::from_secs(60);
/// How often the reservations are looked after.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Relay candidates remembered at most.
const MAX_CANDIDATES: usize = 64;

/// The relay of a `/p2p-circuit` address: the peer named just before the circuit.
pub fn circuit_relay(addr: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for part in addr.iter() {
        match part {
            AddrPart::P2p(p) => relay = Some(p),
            AddrPart::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

/// Whether an address goes through a relay.
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, AddrPart::P2pCircuit))
}

pub(super) struct Relays {
    forced: Reachability,
    nat: Nat,
    /// Connections this node dialled at a direct address, with that address.
    dialled: HashMap<ConnectionId, Multiaddr>,
    /// Peers that speak the relay protocol, with a direct address this node reached them at.
    candidates: HashMap<PeerId, Multiaddr>,
    /// Relay listeners, pending or confirmed, by listener.
    listeners: HashMap<ListenerId, PeerId>,
    /// Confirmed reservations: relay → the circuit address it gave.
    reserved: HashMap<PeerId, Multiaddr>,
    cooldown: HashMap<PeerId, Instant>,
    /// Peers using this node's relay service: the reservations each holds (one per
    /// connection) and its circuits open (as either end). Bounded by the service's own
    /// limits, and an entry goes when its peer disconnects.
    served: HashMap<PeerId, (u32, u32)>,
    last_check: Instant,
    pub(super) upnp: Option<String>,
}

impl Relays {
    pub(super) fn new(forced: Reachability) -> Self {
        let nat = match forced {
            Reachability::Auto => Nat::Unknown,
            Reachability::Public => Nat::Public(None),
            Reachability::Private => Nat::Private,
        };
        Relays {
            forced,
            nat,
            dialled: HashMap::new(),
            candidates: HashMap::new(),
            listeners: HashMap::new(),
            reserved: HashMap::new(),
            cooldown: HashMap::new(),
            served: HashMap::new(),
            last_check: Instant::now(),
            upnp: None,
        }
    }

    pub(super) fn nat(&self) -> Nat {
        self.nat.clone()
    }

    pub(super) fn relayed_addrs(&self) -> Vec<Multiaddr> {
        self.reserved.values().cloned().collect()
    }

    /// Relays this node holds or asks for a reservation on, and peers it relays for.
    pub(super) fn in_use(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.listeners
            .values()
            .copied()
            .chain(self.served.keys().copied())
    }

    /// `peer` has no connection left: nothing of the relay service stays with it.
    pub(super) fn disconnected(&mut self, peer: &PeerId) {
        self.served.remove(peer);
    }

    /// One of a peer's reservations (`reservation`) or circuits (otherwise) on the relay
    /// service opened or closed.
    fn serve(&mut self, peer: PeerId, reservation: bool, opened: bool) {
        let e = self.served.entry(peer).or_insert((0, 0));
        let n = if reservation { &mut e.0 } else { &mut e.1 };
        *n = if opened {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        };
        if *e == (0, 0) {
            self.served.remove(&peer);
        }
    }

    fn wants_relays(&self) -> bool {
        self.nat == Nat::Private
    }
}

impl EventLoop {
    /// A connection opened: remember how a dialled peer was reached.
    pub(super) fn relay_connection_opened(
        &mut self,
        conn: ConnectionId,
        dialled: Option<&Multiaddr>,
    ) {
        if let Some(addr) = dialled.filter(|a| !is_relayed(a)) {
            // The transport part: a dialled address may end in `/p2p/<peer>`.
            let transport: Multiaddr = addr
                .iter()
                .filter(|p| !matches!(p, AddrPart::P2p(_)))
                .collect();
            self.relays.dialled.insert(conn, transport);
        }
    }

    pub(super) fn relay_connection_closed(
        &mut self,
        peer: &PeerId,
        conn: ConnectionId,
        last: bool,
    ) {
        self.relays.dialled.remove(&conn);
        if last {
            self.relays.candidates.remove(peer);
        }
    }

    /// A peer identified itself on `conn`: if it relays and this node dialled it there, it
    /// is a candidate relay.
    pub(super) fn relay_identified(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        protocols: &[libp2p::StreamProtocol],
    ) {
        if !protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            return;
        }
        let Some(addr) = self.relays.dialled.get(&conn) else {
            return;
        };
        if self.relays.candidates.len() < MAX_CANDIDATES
            || self.relays.candidates.contains_key(&peer)
        {
            self.relays.candidates.insert(peer, addr.clone());
        }
    }

    /// Reserves slots while private and short of relays; gives them up once public.
    pub(super) fn look_after_relays(&mut self) {
        if self.relays.last_check.elapsed() < CHECK_EVERY {
            return;
        }
        self.relays.last_check = Instant::now();
        let now = Instant::now();
        self.relays.cooldown.retain(|_, until| *until > now);
        if !self.relays.wants_relays() {
            // Given up by choice: no cooldown for these relays.
            let held: Vec<ListenerId> = self.relays.listeners.drain().map(|(id, _)| id).collect();
            self.relays.reserved.clear();
            for id in held {
                self.swarm.remove_listener(id);
            }
            return;
        }
        let held = self.relays.listeners.len();
        if held >= RELAYS {
            return;
        }
        let mut fresh: Vec<(PeerId, Multiaddr)> = self
            .relays
            .candidates
            .iter()
            .filter(|(p, _)| {
                !self.relays.listeners.values().any(|l| l == *p)
                    && !self.relays.cooldown.contains_key(p)
            })
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        fresh.sort_by_key(|(p, _)| self.rtt.get(p).copied().unwrap_or(Duration::MAX));
        for (relay, addr) in fresh.into_iter().take(RELAYS - held) {
            let circuit = addr.with(AddrPart::P2p(relay)).with(AddrPart::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    debug!(%relay, "asking for a relay reservation");
                    self.relays.listeners.insert(id, relay);
                }
                Err(e) => {
                    debug!(%relay, %circuit, "cannot listen through the relay: {e:?}");
                    self.relays.cooldown.insert(relay, now + RELAY_COOLDOWN);
                }
            }
        }
    }

    /// A listener got an address: for a relay listener, the reservation is in place.
    pub(super) fn relay_listening(&mut self, listener: ListenerId, address: &Multiaddr) -> bool {
        let Some(relay) = self.relays.listeners.get(&listener).copied() else {
            return false;
        };
        // The relay's answer names the addresses to advertise: only its own circuit
        // address, once, is taken; a relay that offers others is left.
        let ours = circuit_relay(address) == Some(relay);
        let again = self
            .relays
            .reserved
            .get(&relay)
            .is_some_and(|a| a != address);
        if !ours || again {
            warn!(%relay, %address, "a relay offered an address not its own circuit; leaving it");
            self.swarm.remove_listener(listener);
            return true;
        }
        if self
            .relays
            .reserved
            .insert(relay, address.clone())
            .is_none()
        {
            info!(%relay, %address, "reachable through a relay");
        }
        true
    }

    /// A listener closed: a relay listener's reservation is gone; try another later.
    pub(super) fn relay_listener_closed(&mut self, listener: ListenerId, why: &str) {
        let Some(relay) = self.relays.listeners.remove(&listener) else {
            return;
        };
        if self.relays.reserved.remove(&relay).is_some() || self.relays.wants_relays() {
            warn!(%relay, "relay reservation ended: {why}");
        }
        self.relays
            .cooldown
            .insert(relay, Instant::now() + RELAY_COOLDOWN);
    }

    /// A node configured as reachable says so for every address it listens on (libp2p's
    /// relay serves only once the node has a confirmed external address; with
    /// reachability `auto`, AutoNAT confirms them).
    pub(super) fn confirm_if_public(&mut self, address: &Multiaddr) {
        if self.relays.forced == Reachability::Public && !is_relayed(address) {
            self.swarm.add_external_address(address.clone());
        }
    }

    pub(super) fn autonat_event(&mut self, e: autonat::Event) {
        if let autonat::Event::StatusChanged { new, .. } = e {
            if self.relays.forced != Reachability::Auto {
                return;
            }
            self.relays.nat = match new {
                autonat::NatStatus::Public(addr) => {
                    info!(%addr, "reachable from outside (AutoNAT)");
                    Nat::Public(Some(addr))
                }
                autonat::NatStatus::Private => {
                    info!("not reachable from outside (AutoNAT); reserving relay slots");
                    Nat::Private
                }
                // Not known any more: keep what is held until AutoNAT says public.
                autonat::NatStatus::Unknown if self.relays.nat == Nat::Private => return,
                autonat::NatStatus::Unknown => Nat::Unknown,
            };
            self.offer_relay();
            // Look after the relays at the next tick.
            let now = Instant::now();
            self.relays.last_check = now.checked_sub(CHECK_EVERY).unwrap_or(now);
        }
    }

    /// The relay service (when configured) is offered exactly while the node is found
    /// reachable: a node that others reach only through a relay cannot relay for them.
    pub(super) fn offer_relay(&mut self) {
        let public = matches!(self.relays.nat, Nat::Public(_));
        if let Some(server) = self.swarm.behaviour_mut().relay_server.as_mut() {
            server.serve(public);
        }
    }

    pub(super) fn relay_client_event(&mut self, e: relay::client::Event) {
        match e {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => debug!(relay = %relay_peer_id, renewal, "relay reservation accepted"),
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %relay_peer_id, "relayed connection out")
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(peer = %src_peer_id, "relayed connection in")
            }
        }
    }

    pub(super) fn relay_server_event(&mut self, e: relay::Event) {
        debug!(?e, "relay service");
        let r = &mut self.relays;
        match e {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed: false,
            } => r.serve(src_peer_id, true, true),
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                r.serve(src_peer_id, true, false)
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                r.serve(src_peer_id, false, true);
                r.serve(dst_peer_id, false, true);
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                ..
            } => {
                r.serve(src_peer_id, false, false);
                r.serve(dst_peer_id, false, false);
            }
            _ => {}
        }
    }

    pub(super) fn dcutr_event(&mut self, e: dcutr::Event) {
        match e.result {
            Ok(_) => info!(peer = %e.remote_peer_id, "direct connection made (hole punch)"),
            Err(err) => debug!(peer = %e.remote_peer_id, "hole punch failed: {err}"),
        }
    }

    #[cfg(feature = "upnp")]
    pub(super) fn upnp_event(&mut self, e: libp2p::upnp::Event) {
        let said = match e {
            libp2p::upnp::Event::NewExternalAddr { external_addr, .. } => {
                info!(%external_addr, "UPnP mapped a port");
                format!("mapped {external_addr}")
            }
            libp2p::upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                format!("mapping of {external_addr} expired")
            }
            libp2p::upnp::Event::GatewayNotFound => "no UPnP gateway found".to_owned(),
            libp2p::upnp::Event::NonRoutableGateway => {
                "the UPnP gateway is itself behind a NAT".to_owned()
            }
        };
        self.relays.upnp = Some(said);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_service_users_are_counted_and_forgotten() {
        let mut r = Relays::new(Reachability::Public);
        let (a, b) = (PeerId::random(), PeerId::random());
        // Two reservations (two connections), one circuit between a and b.
        r.serve(a, true, true);
        r.serve(a, true, true);
        r.serve(a, false, true);
        r.serve(b, false, true);
        let users: Vec<PeerId> = r.in_use().collect();
        assert!(users.contains(&a) && users.contains(&b));
        // One reservation closes: a still holds the other.
        r.serve(a, true, false);
        r.serve(a, false, false);
        assert!(r.in_use().any(|p| p == a));
        // A close reported twice costs nothing and goes no lower than zero.
        r.serve(b, false, false);
        r.serve(b, false, false);
        assert!(!r.in_use().any(|p| p == b));
        r.serve(a, true, false);
        assert_eq!(r.in_use().count(), 0);
        // A peer that disconnects leaves nothing behind.
        r.serve(b, true, true);
        r.disconnected(&b);
        assert_eq!(r.in_use().count(), 0);
    }
}
