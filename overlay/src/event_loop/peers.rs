//! Peers and connections: dials (done once the peer identifies itself), connections
//! opening and closing, identify, ping round trips, mDNS discoveries, the allow/block
//! list and strikes against peers that send invalid input.

use std::collections::HashMap;

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol as AddrPart;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{identify, mdns, ping, Multiaddr, PeerId};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{busy, EventLoop, Pending, MAX_PENDING};
use crate::behaviour::BehaviourEvent;
use crate::error::Error;
use crate::event::Event;
use crate::handle::{Info, PeerInfo, Reply};
use crate::protocols;

/// A peer's announced addresses taken into the routing table, at most (identify allows
/// far more; kad keeps a bounded list per peer anyway).
const MAX_LISTEN_ADDRS: usize = 16;

impl EventLoop {
    pub(super) fn info(&mut self) -> Info {
        let access = &self.swarm.behaviour().access;
        let blocked = access.blocked().copied().collect();
        let allow_only = access.allow_only_set().map(|s| s.iter().copied().collect());
        let dht_peers = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        let listen_addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        Info {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: listen_addrs.clone(),
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            connected_peers: self.swarm.connected_peers().count(),
            dht_peers,
            blocked,
            allow_only,
            nat: self.relays.nat(),
            relay_service: self.relay_service,
            relayed_addrs: self.relays.relayed_addrs(),
            upnp: self.relays.upnp.clone(),
            mapping: self.observed.verdicts(&listen_addrs),
            target: self.target,
            trimmed: self.activity.trimmed(),
        }
    }

    /// Every peer of the routing table, with the addresses it holds.
    fn table(&mut self) -> HashMap<PeerId, Vec<Multiaddr>> {
        let mut dht = HashMap::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for e in bucket.iter() {
                dht.insert(
                    *e.node.key.preimage(),
                    e.node.value.iter().cloned().collect(),
                );
            }
        }
        dht
    }

    pub(super) fn routing_table(&mut self) -> Vec<PeerInfo> {
        self.table()
            .into_iter()
            .map(|(peer, addrs)| PeerInfo {
                peer,
                addrs,
                rtt: self.rtt.get(&peer).copied(),
                connected: self.swarm.is_connected(&peer),
                relayed: self.relayed_only(&peer),
                in_dht: true,
                breaker: self.breakers.state(&peer, std::time::Instant::now()),
            })
            .collect()
    }

    /// Whether every open connection to `peer` goes through a relay.
    fn relayed_only(&self, peer: &PeerId) -> bool {
        self.addrs.relayed_only(peer)
    }

    /// Closes relayed connections to peers reached directly as well (after a hole punch,
    /// say): otherwise requests keep taking turns over both. A blob request caught on one
    /// is sent again over the direct connection (see `requests.rs`).
    pub(super) fn retire_relayed(&mut self) {
        for (peer, conn) in self.addrs.superseded() {
            debug!(%peer, "a direct connection replaces the relayed one");
            self.swarm.close_connection(conn);
        }
    }

    /// Connected peers, then peers known only from the routing table.
    pub(super) fn peers(&mut self) -> Vec<PeerInfo> {
        let dht = self.table();
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let mut out: Vec<PeerInfo> = connected
            .iter()
            .map(|p| PeerInfo {
                peer: *p,
                addrs: self.addrs.of(p),
                rtt: self.rtt.get(p).copied(),
                connected: true,
                relayed: self.relayed_only(p),
                in_dht: dht.contains_key(p),
                breaker: self.breakers.state(p, std::time::Instant::now()),
            })
            .collect();
        for (p, addrs) in dht {
            if !connected.contains(&p) {
                out.push(PeerInfo {
                    peer: p,
                    addrs,
                    rtt: None,
                    connected: false,
                    relayed: false,
                    in_dht: true,
                    breaker: self.breakers.state(&p, std::time::Instant::now()),
                });
            }
        }
        out.sort_by_key(|p| (!p.connected, p.peer.to_string()));
        out
    }

    /// Dials `addr`. A bare `/p2p/<id>` uses the addresses known here; with `lookup`, a
    /// peer with none is looked up in the DHT first (an operator's `lattice dial`; the
    /// node's own dials do not wait on lookups).
    pub(super) fn dial(&mut self, addr: Multiaddr, lookup: bool, reply: Reply<PeerId>) {
        if self.dials.len() >= MAX_PENDING {
            return busy(reply);
        }
        let peer = match addr.iter().last() {
            Some(AddrPart::P2p(p)) => Some(p),
            _ => None,
        };
        if let Some(p) = peer {
            if !self.swarm.behaviour().access.is_allowed(&p) {
                let _ = reply.send(Err(Error::Blocked(p)));
                return;
            }
            if self.swarm.is_connected(&p) && self.identified.contains(&p) {
                let _ = reply.send(Ok(p));
                return;
            }
        }
        let only_peer = addr.iter().count() == 1 && peer.is_some();
        // Always a new connection: one that is open but not yet identified may be one the
        // remote is about to refuse.
        let opts = match peer {
            // Just `/p2p/<id>`: the DHT supplies the addresses.
            Some(p) if only_peer => DialOpts::peer_id(p)
                .condition(PeerCondition::Always)
                .build(),
            Some(p) => DialOpts::peer_id(p)
                .condition(PeerCondition::Always)
                .addresses(vec![addr])
                .build(),
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => self.await_dial(id, reply, self.deadline()),
            // No address known here: ask the DHT for the peer, then dial what it says.
            Err(DialError::NoAddresses) if only_peer && lookup => {
                if let Some(p) = peer {
                    self.find_then_dial(p, reply);
                }
            }
            Err(DialError::NoAddresses) if only_peer => {
                let msg = "no known address for this peer (give a full multiaddr)";
                let _ = reply.send(Err(Error::Dial(msg.into())));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Dial(e.to_string())));
            }
        }
    }

    /// Dials; `reply` answers once the peer has identified itself (or the dial failed),
    /// by `deadline`.
    pub(super) fn start_dial(&mut self, opts: DialOpts, reply: Reply<PeerId>, deadline: Instant) {
        if self.dials.len() >= MAX_PENDING {
            return busy(reply);
        }
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => self.await_dial(id, reply, deadline),
            Err(e) => {
                let _ = reply.send(Err(Error::Dial(e.to_string())));
            }
        }
    }

    fn await_dial(&mut self, id: ConnectionId, reply: Reply<PeerId>, deadline: Instant) {
        self.dials.insert(id, Pending { deadline, reply });
    }

    pub(super) fn block(&mut self, peers: Vec<PeerId>) -> Result<(), Error> {
        if self.swarm.behaviour_mut().access.block(peers) {
            Ok(())
        } else {
            Err(Error::Limit(format!(
                "at most {} peers can be blocked",
                crate::access::MAX_BLOCKED
            )))
        }
    }

    pub(super) fn strike(&mut self, peer: PeerId) {
        self.breaker_failure(peer);
        if self.strikes.strike(peer, std::time::Instant::now()) {
            warn!(%peer, "blocking a peer that keeps sending invalid input");
            self.swarm.behaviour_mut().access.block(vec![peer]);
        }
    }

    /// A connection opened, closed, or could not be made.
    pub(super) fn connection_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                debug!(peer = %peer_id, %addr, "connected");
                let relayed = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => super::is_relayed(address),
                    ConnectedPoint::Listener { local_addr, .. } => super::is_relayed(local_addr),
                };
                self.addrs
                    .opened(peer_id, connection_id, addr.clone(), relayed);
                self.activity.connected(peer_id, Instant::now());
                let dialled = endpoint.is_dialer().then_some(&addr);
                self.relay_connection_opened(connection_id, dialled);
                // Once per peer, as PeerDisconnected is, so the two pair up.
                if num_established.get() == 1 {
                    self.emit(Event::PeerConnected {
                        peer: peer_id,
                        addr,
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.addrs.closed(&peer_id, connection_id);
                self.relay_connection_closed(&peer_id, connection_id, num_established == 0);
                if let Some(p) = self.dials.remove(&connection_id) {
                    let why = cause.map_or_else(|| "closed".to_owned(), |c| c.to_string());
                    let msg = format!("{peer_id} closed the connection before identifying ({why}); it may be blocking this node");
                    let _ = p.reply.send(Err(Error::Dial(msg)));
                }
                if num_established == 0 {
                    self.activity.disconnected(&peer_id);
                    self.relays.disconnected(&peer_id);
                    self.identified.remove(&peer_id);
                    self.rtt.remove(&peer_id);
                    self.emit(Event::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                debug!(?peer_id, %error, "dial failed");
                if let Some(p) = self.dials.remove(&connection_id) {
                    let e = if dial_timed_out(&error) {
                        Error::Timeout(self.timeout)
                    } else {
                        Error::Dial(error.to_string())
                    };
                    let _ = p.reply.send(Err(e));
                }
            }
            // Said where an operator looks (a peer whose key type or protocols do not fit,
            // a scanner), but at most once per interval: strangers choose how often this
            // happens.
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } if self.refusals.allow(std::time::Instant::now()) => {
                info!(
                    peer_addr = %send_back_addr,
                    suppressed = self.refusals.take_suppressed(),
                    "an incoming connection failed: {}",
                    with_causes(&error)
                );
            }
            _ => {}
        }
    }

    /// A peer identified itself: a dial waiting on this connection is done, and a peer
    /// that speaks our Kademlia (whatever implementation it is) joins the routing table.
    pub(super) fn identify_event(&mut self, e: identify::Event) {
        let identify::Event::Received {
            peer_id,
            info,
            connection_id,
        } = e
        else {
            return;
        };
        self.identified.insert(peer_id);
        self.found_by_identify(peer_id);
        self.observed.record(peer_id, &info.observed_addr);
        if let Some(p) = self.dials.remove(&connection_id) {
            let _ = p.reply.send(Ok(peer_id));
        }
        self.relay_identified(peer_id, connection_id, &info.protocols);
        // What a peer speaks decides, not its protocol version string, which other
        // implementations set to their own (js-libp2p, Kubo) or cannot set at all. A peer
        // in DHT client mode does not list the protocol and stays out, as does one that
        // names no address to reach it at.
        if info.protocols.contains(&protocols::KAD) {
            for addr in info.listen_addrs.into_iter().take(MAX_LISTEN_ADDRS) {
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
    }

    pub(super) fn ping_event(&mut self, e: ping::Event) {
        if let ping::Event {
            peer,
            result: Ok(rtt),
            ..
        } = e
        {
            self.rtt.insert(peer, rtt);
        }
    }

    /// Peers found on the LAN join the routing table and are dialled.
    pub(super) fn mdns_event(&mut self, e: mdns::Event) {
        let mdns::Event::Discovered(found) = e else {
            return;
        };
        for (peer, addr) in found {
            debug!(%peer, %addr, "found on the LAN");
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
            if !self.swarm.is_connected(&peer) {
                let _ = self
                    .swarm
                    .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
            }
        }
    }
}

/// An error with its causes, outermost first: libp2p's own message for a failed upgrade
/// ("Failed to negotiate transport protocol(s)") leaves out why, e.g. a key type this node
/// does not accept. Some causes carry a remote's text (a QUIC close reason): control
/// characters are escaped, so it cannot forge log lines, and the whole is cut at
/// [`MAX_CAUSES`] bytes.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    let mut safe = String::with_capacity(text.len().min(MAX_CAUSES));
    for ch in text.chars() {
        if safe.len() >= MAX_CAUSES {
            safe.push_str("...");
            break;
        }
        if ch.is_control() {
            safe.extend(ch.escape_default());
        } else {
            safe.push(ch);
        }
    }
    safe
}

/// Longest error text logged for a failed incoming connection.
const MAX_CAUSES: usize = 1024;

/// True when every address of a failed dial timed out (the connection was made, but
/// the handshake never finished in time): the caller hears `Timeout`, not a refusal.
fn dial_timed_out(error: &DialError) -> bool {
    use libp2p::core::transport::TransportError;
    let DialError::Transport(errors) = error else {
        return false;
    };
    !errors.is_empty()
        && errors.iter().all(|(_, e)| match e {
            TransportError::Other(io) => {
                io.kind() == std::io::ErrorKind::TimedOut
                    // libp2p's transport timeout arrives boxed in an `Other` I/O error.
                    || io
                        .get_ref()
                        .is_some_and(|inner| inner.to_string().contains("Timeout has been reached"))
            }
            TransportError::MultiaddrNotSupported(_) => false,
        })
}
