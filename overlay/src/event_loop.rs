//! The task that owns the swarm: it carries out [`Command`]s from handles and turns swarm
//! events into [`Event`]s and replies. Every pending reply has a deadline, and every
//! pending map is bounded.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::metrics::{Metrics, Recorder};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{gossipsub, identify, kad, mdns, ping, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::error::Error;
use crate::event::{Event, GossipId, Responder, Verdict};
use crate::handle::{Command, Info, PeerInfo, Reply};
use crate::protocols;

/// Replies of one kind waiting at once; more are refused as busy.
const MAX_PENDING: usize = 1_024;
/// How often deadlines are checked.
const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// While the routing table is smaller than a Kademlia bucket (a small or young network),
/// re-run the bootstrap this often, so peers that joined after us are found in seconds
/// rather than at the next periodic bootstrap.
const SMALL_TABLE_BOOTSTRAP: Duration = Duration::from_secs(5);
const SMALL_TABLE: usize = 20;

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
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers that identified themselves on a connection still open: the ones that really
    /// accepted this node (a peer that refuses us closes before identifying).
    identified: HashSet<PeerId>,
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
            addrs: HashMap::new(),
            identified: HashSet::new(),
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

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Info(reply) => {
                let _ = reply.send(Ok(self.info()));
            }
            Command::Peers(reply) => {
                let _ = reply.send(Ok(self.peers()));
            }
            Command::Dial(addr, reply) => self.dial(addr, reply),
            Command::Block(peers, reply) => {
                self.swarm.behaviour_mut().access.block(peers);
                let _ = reply.send(Ok(()));
            }
            Command::Unblock(peers, reply) => {
                self.swarm.behaviour_mut().access.unblock(peers);
                let _ = reply.send(Ok(()));
            }
            Command::AllowOnly(peers, reply) => {
                self.swarm.behaviour_mut().access.allow_only(peers);
                let _ = reply.send(Ok(()));
            }
            Command::AllowAll(reply) => {
                self.swarm.behaviour_mut().access.allow_all();
                let _ = reply.send(Ok(()));
            }
            Command::Subscribe(topic, reply) => {
                let t = gossipsub::IdentTopic::new(topic);
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&t)
                    .map(|_| ())
                    .map_err(|e| Error::Gossip(e.to_string()));
                let _ = reply.send(r);
            }
            Command::Publish(topic, data, reply) => {
                let t = gossipsub::IdentTopic::new(topic);
                let r = match self.swarm.behaviour_mut().gossipsub.publish(t, data) {
                    Ok(_) => Ok(()),
                    // Nobody to send to yet: not an error for the writer; anti-entropy
                    // delivers later.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
                    Err(e) => Err(Error::Gossip(e.to_string())),
                };
                let _ = reply.send(r);
            }
            Command::ReportGossip(GossipId(id), source, verdict) => {
                let acceptance = match verdict {
                    Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                    Verdict::Reject => gossipsub::MessageAcceptance::Reject,
                    Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Command::Request(peer, protocol, data, reply) => {
                if self.requests.len() >= MAX_PENDING {
                    return busy(reply);
                }
                let b = self.swarm.behaviour_mut();
                let id = if protocol == protocols::SYNC {
                    b.sync.send_request(&peer, data)
                } else if protocol == protocols::BLOB {
                    b.blob.send_request(&peer, data)
                } else {
                    let _ = reply.send(Err(Error::Request(format!("unknown protocol {protocol}"))));
                    return;
                };
                self.requests.insert(
                    id,
                    Pending {
                        deadline: self.deadline(),
                        reply,
                    },
                );
            }
            Command::Respond(Responder(channel), data) => {
                // Both behaviours share the codec; the channel knows its own stream.
                let b = self.swarm.behaviour_mut();
                if let Err(data) = b.sync.send_response(channel, data) {
                    debug!(len = data.len(), "response not sent: the requester is gone");
                }
            }
            Command::Provide(key, reply) => {
                if self.queries.len() >= MAX_PENDING {
                    return busy(reply);
                }
                match self.swarm.behaviour_mut().kad.start_providing(key.into()) {
                    Ok(id) => {
                        self.queries.insert(
                            id,
                            Query::Provide(Pending {
                                deadline: self.deadline(),
                                reply,
                            }),
                        );
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dht(e.to_string())));
                    }
                }
            }
            Command::Providers(key, reply) => {
                if self.queries.len() >= MAX_PENDING {
                    return busy(reply);
                }
                let id = self.swarm.behaviour_mut().kad.get_providers(key.into());
                self.queries.insert(
                    id,
                    Query::Providers(
                        Pending {
                            deadline: self.deadline(),
                            reply,
                        },
                        HashSet::new(),
                    ),
                );
            }
        }
    }

    fn info(&mut self) -> Info {
        let access = &self.swarm.behaviour().access;
        let blocked = access.blocked().map(ToString::to_string).collect();
        let allow_only = access
            .allow_only_set()
            .map(|s| s.iter().map(ToString::to_string).collect());
        let dht_peers = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        Info {
            peer_id: self.swarm.local_peer_id().to_string(),
            listen_addrs: self.swarm.listeners().map(ToString::to_string).collect(),
            external_addrs: self
                .swarm
                .external_addresses()
                .map(ToString::to_string)
                .collect(),
            connected_peers: self.swarm.connected_peers().count(),
            dht_peers,
            blocked,
            allow_only,
        }
    }

    fn peers(&mut self) -> Vec<PeerInfo> {
        let mut dht: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for e in bucket.iter() {
                dht.insert(
                    *e.node.key.preimage(),
                    e.node.value.iter().cloned().collect(),
                );
            }
        }
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let mut out: Vec<PeerInfo> = connected
            .iter()
            .map(|p| PeerInfo {
                peer_id: p.to_string(),
                addrs: self
                    .addrs
                    .get(p)
                    .map(|a| a.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                rtt_ms: self.rtt.get(p).map(|d| d.as_secs_f64() * 1_000.0),
                connected: true,
                in_dht: dht.contains_key(p),
            })
            .collect();
        for (p, addrs) in dht {
            if !connected.contains(&p) {
                out.push(PeerInfo {
                    peer_id: p.to_string(),
                    addrs: addrs.iter().map(ToString::to_string).collect(),
                    rtt_ms: None,
                    connected: false,
                    in_dht: true,
                });
            }
        }
        out.sort_by(|a, b| (!a.connected, &a.peer_id).cmp(&(!b.connected, &b.peer_id)));
        out
    }

    fn dial(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
        if self.dials.len() >= MAX_PENDING {
            return busy(reply);
        }
        let peer = match addr.iter().last() {
            Some(Protocol::P2p(p)) => Some(p),
            _ => None,
        };
        if let Some(p) = peer {
            if !self.swarm.behaviour().access.is_allowed(&p) {
                let _ = reply.send(Err(Error::Blocked(p)));
                return;
            }
        }
        if let Some(p) = peer {
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
            Ok(()) => {
                self.dials.insert(
                    id,
                    Pending {
                        deadline: self.deadline(),
                        reply,
                    },
                );
            }
            Err(DialError::NoAddresses) => {
                let msg =
                    "no known address for this peer (not in the DHT yet; give a full multiaddr)";
                let _ = reply.send(Err(Error::Dial(msg.into())));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Dial(e.to_string())));
            }
        }
    }

    fn bootstrap_if_small(&mut self) {
        if self.last_bootstrap.elapsed() < SMALL_TABLE_BOOTSTRAP {
            return;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        let size: usize = kad.kbuckets().map(|b| b.num_entries()).sum();
        if size > 0 && size < SMALL_TABLE {
            self.last_bootstrap = Instant::now();
            let _ = kad.bootstrap();
        }
    }

    /// Answers every pending reply whose deadline has passed.
    fn expire(&mut self) {
        let now = Instant::now();
        let t = self.timeout;
        expire_map(&mut self.dials, now, t);
        expire_map(&mut self.requests, now, t);
        let late: Vec<kad::QueryId> = self
            .queries
            .iter()
            .filter(|(_, q)| match q {
                Query::Provide(p) => p.deadline <= now,
                Query::Providers(p, _) => p.deadline <= now,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                q.finish();
            }
            match self.queries.remove(&id) {
                Some(Query::Provide(p)) => {
                    let _ = p.reply.send(Err(Error::Timeout(t)));
                }
                // What was found so far is an answer.
                Some(Query::Providers(p, found)) => {
                    let _ = p.reply.send(Ok(found.into_iter().collect()));
                }
                None => {}
            }
        }
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
                peer_id, endpoint, ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                debug!(peer = %peer_id, %addr, "connected");
                let known = self.addrs.entry(peer_id).or_default();
                if !known.contains(&addr) {
                    known.push(addr.clone());
                }
                self.emit(Event::PeerConnected {
                    peer: peer_id,
                    addr,
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                if let Some(p) = self.dials.remove(&connection_id) {
                    let why = cause.map_or_else(|| "closed".to_owned(), |c| c.to_string());
                    let msg = format!("{peer_id} closed the connection before identifying ({why}); it may be blocking this node");
                    let _ = p.reply.send(Err(Error::Dial(msg)));
                }
                if num_established == 0 {
                    self.identified.remove(&peer_id);
                    self.addrs.remove(&peer_id);
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
                    let _ = p.reply.send(Err(Error::Dial(error.to_string())));
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
                if let gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                } = e
                {
                    self.emit(Event::Gossip {
                        topic: message.topic.into_string(),
                        source: propagation_source,
                        author: message.source,
                        id: GossipId(message_id),
                        data: message.data,
                    });
                }
            }
            BehaviourEvent::Sync(e) => self.handle_rr(protocols::SYNC, e),
            BehaviourEvent::Blob(e) => self.handle_rr(protocols::BLOB, e),
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

    fn handle_rr(
        &mut self,
        protocol: StreamProtocol,
        e: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        match e {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    self.emit(Event::Request {
                        peer,
                        protocol,
                        data: request,
                        responder: Responder(channel),
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
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

fn expire_map<K: Copy + Eq + std::hash::Hash, T>(
    map: &mut HashMap<K, Pending<T>>,
    now: Instant,
    t: Duration,
) {
    let late: Vec<K> = map
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(k, _)| *k)
        .collect();
    for k in late {
        if let Some(p) = map.remove(&k) {
            let _ = p.reply.send(Err(Error::Timeout(t)));
        }
    }
}
