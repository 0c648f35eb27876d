//! The task that owns the swarm: it carries out [`Command`]s from handles and turns swarm
//! events into [`Event`]s and replies. Every pending reply has a deadline, and every
//! pending map is bounded.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::metrics::{Metrics, Recorder};
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{gossipsub, identify, kad, mdns, ping, PeerId, Swarm};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::error::Error;
use crate::event::{Event, GossipId, Responder};
use crate::handle::{Command, Reply};
use crate::policy::{Budget, Charge, RateLimit, Strikes};
use crate::protocols::{self, Protocol};

mod addrs;
mod commands;

use addrs::ConnectedAddrs;

/// Replies of one kind waiting at once; more are refused as busy.
const MAX_PENDING: usize = 1_024;
/// Answers this small are sent even when the requester's share of answers in flight is
/// used up (uncharged).
pub(super) const SMALL_RESPONSE: usize = 4 << 10;
/// How often deadlines are checked.
const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// While the routing table is smaller than a Kademlia bucket (a small or young network),
/// re-run the bootstrap this often, so peers that joined after us are found in seconds
/// rather than at the next periodic bootstrap.
pub(super) const SMALL_TABLE_BOOTSTRAP: Duration = Duration::from_secs(5);
pub(super) const SMALL_TABLE: usize = 20;

struct Pending<T> {
    deadline: Instant,
    reply: Reply<T>,
}

enum Query {
    Provide(Pending<()>),
    Providers(Pending<Vec<PeerId>>, HashSet<PeerId>),
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    timeout: Duration,
    metrics: Option<Metrics>,
    /// Dials by connection; a dial succeeds once the peer has identified itself on the
    /// new connection, which proves the remote accepted it (a peer that blocks this node
    /// closes the connection instead).
    dials: HashMap<ConnectionId, Pending<PeerId>>,
    requests: HashMap<OutboundRequestId, Pending<Vec<u8>>>,
    queries: HashMap<kad::QueryId, Query>,
    rtt: HashMap<PeerId, Duration>,
    addrs: ConnectedAddrs,
    /// Peers that identified themselves on a connection still open: the ones that really
    /// accepted this node (a peer that refuses us closes before identifying).
    identified: HashSet<PeerId>,
    /// What other peers' input in the node's hands costs; see [`crate::policy`].
    budget: Budget,
    /// Responses handed to libp2p, held against [`EventLoop::out_budget`] until sent.
    pub(super) responding: HashMap<(Protocol, InboundRequestId), (Instant, Charge)>,
    pub(super) out_budget: Budget,
    rate: RateLimit,
    pub(super) strikes: Strikes,
    bootstrapped: bool,
    last_bootstrap: Instant,
    dropped_events: u64,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        timeout: Duration,
        metrics: Option<Metrics>,
        (budget, out_budget): (Budget, Budget),
        rate: RateLimit,
    ) -> Self {
        EventLoop {
            swarm,
            commands,
            events,
            timeout,
            metrics,
            dials: HashMap::new(),
            requests: HashMap::new(),
            queries: HashMap::new(),
            rtt: HashMap::new(),
            addrs: ConnectedAddrs::default(),
            identified: HashSet::new(),
            budget,
            responding: HashMap::new(),
            out_budget,
            rate,
            strikes: Strikes::default(),
            bootstrapped: false,
            last_bootstrap: Instant::now(),
            dropped_events: 0,
        }
    }
}

fn busy<T>(reply: Reply<T>) {
    let _ = reply.send(Err(Error::Busy(MAX_PENDING)));
}

impl EventLoop {
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.handle_command(cmd),
                    // Every handle is gone: the node is shutting down.
                    None => break,
                },
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                _ = tick.tick() => {
                    self.expire();
                    self.bootstrap_if_small();
                }
            }
        }
        info!("overlay stopped");
    }

    fn emit(&mut self, event: Event) {
        if let Err(e) = self.events.try_send(event) {
            self.dropped_events += 1;
            warn!(
                dropped = self.dropped_events,
                "node is not keeping up with overlay events: {e}"
            );
        }
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.metrics {
            m.record(&event);
        }
        match event {
            SwarmEvent::Behaviour(ev) => self.handle_behaviour_event(ev),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                debug!(peer = %peer_id, %addr, "connected");
                self.addrs.opened(peer_id, connection_id, addr.clone());
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
                if let Some(p) = self.dials.remove(&connection_id) {
                    let why = cause.map_or_else(|| "closed".to_owned(), |c| c.to_string());
                    let msg = format!("{peer_id} closed the connection before identifying ({why}); it may be blocking this node");
                    let _ = p.reply.send(Err(Error::Dial(msg)));
                }
                if num_established == 0 {
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
            SwarmEvent::NewListenAddr { address, .. } => info!(%address, "listening"),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed")
            }
            _ => {}
        }
    }

    fn handle_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                if let identify::Event::Received {
                    peer_id,
                    info,
                    connection_id,
                } = e
                {
                    self.identified.insert(peer_id);
                    if let Some(p) = self.dials.remove(&connection_id) {
                        let _ = p.reply.send(Ok(peer_id));
                    }
                    let speaks_kad = info.protocols.contains(&protocols::KAD);
                    if info.protocol_version == protocols::IDENTIFY_VERSION && speaks_kad {
                        for addr in info.listen_addrs {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                }
            }
            BehaviourEvent::Kad(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                self.handle_kad(e);
            }
            BehaviourEvent::Ping(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                if let ping::Event {
                    peer,
                    result: Ok(rtt),
                    ..
                } = e
                {
                    self.rtt.insert(peer, rtt);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
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
            BehaviourEvent::Gossipsub(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                match e {
                    gossipsub::Event::Message {
                        propagation_source,
                        message_id,
                        message,
                    } => {
                        let allowed = self
                            .rate
                            .allow(propagation_source, std::time::Instant::now());
                        let charge = allowed
                            .then(|| self.budget.charge(propagation_source, message.data.len()))
                            .flatten();
                        let Some(charge) = charge else {
                            debug!(peer = %propagation_source, "gossip over the peer's budget; ignored");
                            self.swarm
                                .behaviour_mut()
                                .gossipsub
                                .report_message_validation_result(
                                    &message_id,
                                    &propagation_source,
                                    gossipsub::MessageAcceptance::Ignore,
                                );
                            return;
                        };
                        self.emit(Event::Gossip {
                            topic: message.topic.into_string(),
                            source: propagation_source,
                            author: message.source,
                            id: GossipId(message_id),
                            data: message.data,
                            charge,
                        })
                    }
                    gossipsub::Event::Subscribed { peer_id, topic } => {
                        self.emit(Event::Subscribed {
                            peer: peer_id,
                            topic: topic.into_string(),
                        })
                    }
                    gossipsub::Event::Unsubscribed { peer_id, topic } => {
                        self.emit(Event::Unsubscribed {
                            peer: peer_id,
                            topic: topic.into_string(),
                        })
                    }
                    _ => {}
                }
            }
            BehaviourEvent::Sync(e) => self.handle_rr(Protocol::Sync, e),
            BehaviourEvent::Blob(e) => self.handle_rr(Protocol::Blob, e),
            BehaviourEvent::Service(e) => self.handle_rr(Protocol::Service, e),
            BehaviourEvent::Dcutr(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
            }
            _ => {}
        }
    }

    fn handle_kad(&mut self, e: kad::Event) {
        match e {
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            } => {
                debug!(%peer, "added to the routing table");
                if !self.bootstrapped {
                    // The first peer: join the DHT now rather than at the next periodic run.
                    self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                }
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                kad::QueryResult::Bootstrap(r) => debug!(ok = r.is_ok(), "DHT bootstrap step"),
                kad::QueryResult::StartProviding(r) => {
                    if let Some(Query::Provide(p)) = self.queries.remove(&id) {
                        let _ = p
                            .reply
                            .send(r.map(|_| ()).map_err(|e| Error::Dht(e.to_string())));
                    }
                }
                kad::QueryResult::GetProviders(r) => {
                    if let Some(Query::Providers(_, found)) = self.queries.get_mut(&id) {
                        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                            found.extend(providers);
                        }
                    }
                    if step.last {
                        if let Some(Query::Providers(p, found)) = self.queries.remove(&id) {
                            let _ = p.reply.send(Ok(found.into_iter().collect()));
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn handle_rr(&mut self, protocol: Protocol, e: request_response::Event<Vec<u8>, Vec<u8>>) {
        match e {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request,
                    channel,
                    request_id,
                } => {
                    // Over budget: the channel is dropped and the peer's request fails at
                    // once, before it costs the node anything more.
                    let allowed = self.rate.allow(peer, std::time::Instant::now());
                    let charge = allowed
                        .then(|| self.budget.charge(peer, request.len()))
                        .flatten();
                    let Some(charge) = charge else {
                        debug!(%peer, %protocol, len = request.len(), "request over the peer's budget; dropped");
                        return;
                    };
                    self.emit(Event::Request {
                        peer,
                        protocol,
                        data: request,
                        responder: Responder {
                            channel,
                            peer,
                            protocol,
                            id: request_id,
                            _charge: charge,
                            out_budget: self.out_budget.clone(),
                            reserved: None,
                        },
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(p) = self.requests.remove(&request_id) {
                        let _ = p.reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                debug!(%peer, %error, "request failed");
                if let Some(p) = self.requests.remove(&request_id) {
                    let _ = p.reply.send(Err(Error::Request(error.to_string())));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                debug!(%peer, %error, "inbound request failed");
                self.responding.remove(&(protocol, request_id));
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.responding.remove(&(protocol, request_id));
            }
        }
    }
}

/// True when every address of a failed dial timed out (the connection was made, but
/// the handshake never finished in time): the caller hears `Timeout`, not a refusal.
fn dial_timed_out(error: &libp2p::swarm::DialError) -> bool {
    use libp2p::core::transport::TransportError;
    let libp2p::swarm::DialError::Transport(errors) = error else {
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
