//! The task that owns the swarm: it carries out [`Command`]s from handles and turns swarm
//! events into [`Event`]s and replies. Every pending reply has a deadline, and every
//! pending map is bounded.
//!
//! This file holds the task's state, its loop, and the routing of commands and events to
//! the concept they belong to, each in a file of its own:
//!
//! - `republish.rs`: this node's provider records, published again one key at a time.
//! - `peers.rs`: connections, dials, identify, ping, mDNS, the allow/block list, strikes.
//! - `dht.rs`: Kademlia: provider records, lookups, bootstrapping.
//! - `gossip.rs`: gossipsub topics, messages and verdicts.
//! - `relays.rs`: reachability (AutoNAT), relay reservations and service, hole punches,
//!   UPnP.
//! - `requests.rs`: the request-response protocols: requests out, requests in, responses
//!   held against the per-peer budget.
//! - `trim.rs`: the connection manager, which closes idle peers beyond the target.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::metrics::{Metrics, Recorder};
use libp2p::request_response::{InboundRequestId, OutboundRequestId};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{kad, PeerId, Swarm};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::breaker::{BreakerMetrics, Breakers};
use crate::error::Error;
use crate::event::Event;
use crate::handle::{Command, Reply};
use crate::policy::{Budget, Charge, RateLimit, Strikes, Throttle};
use crate::protocols::Protocol;

mod addrs;
mod dht;
mod gossip;
mod mapping;
mod peers;
mod relays;
mod republish;
mod requests;
mod trim;

use addrs::ConnectedAddrs;
use dht::Query;
use mapping::Observations;
pub use mapping::{Mapping, Observed};
pub use relays::circuit_relay;
pub(crate) use relays::is_relayed;
use relays::Relays;
use republish::Republish;
use trim::Activity;

/// Replies of one kind waiting at once; more are refused as busy.
const MAX_PENDING: usize = 1_024;
/// How often deadlines are checked.
const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// A failed incoming connection (a handshake that did not fit) is logged at most this
/// often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

struct Pending<T> {
    deadline: Instant,
    reply: Reply<T>,
}

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    timeout: Duration,
    bulk_timeout: Duration,
    metrics: Option<Metrics>,
    /// Per-peer circuit breakers on requests out, and their metrics.
    breakers: Breakers,
    breaker_metrics: Option<BreakerMetrics>,
    /// Dials by connection; a dial succeeds once the peer has identified itself on the
    /// new connection, which proves the remote accepted it (a peer that blocks this node
    /// closes the connection instead).
    dials: HashMap<ConnectionId, Pending<PeerId>>,
    requests: HashMap<OutboundRequestId, Pending<Vec<u8>>>,
    /// The peer each of [`EventLoop::requests`] went to (the connection manager keeps
    /// them). Entries live no longer than their request.
    outbound: HashMap<OutboundRequestId, PeerId>,
    /// Blob requests in flight, kept to be sent once more if their connection closes
    /// under them while another to the peer stays open (a relayed connection retired in
    /// favour of a direct one). Entries live no longer than their [`EventLoop::requests`].
    resend: HashMap<OutboundRequestId, (PeerId, Vec<u8>)>,
    queries: HashMap<kad::QueryId, Query>,
    /// When the earliest provider lookup that has found providers is due to answer.
    lookup_due: Option<Instant>,
    /// Failed incoming connections are logged at most this often.
    refusals: Throttle,
    rtt: HashMap<PeerId, Duration>,
    addrs: ConnectedAddrs,
    /// Peers that identified themselves on a connection still open: the ones that really
    /// accepted this node (a peer that refuses us closes before identifying).
    identified: HashSet<PeerId>,
    /// The addresses peers saw this node's connections come from.
    observed: Observations,
    /// What other peers' input in the node's hands costs; see [`crate::policy`].
    budget: Budget,
    /// Responses handed to libp2p, held against [`EventLoop::out_budget`] until sent.
    responding: HashMap<(Protocol, InboundRequestId), (Instant, Charge)>,
    out_budget: Budget,
    rate: RateLimit,
    strikes: Strikes,
    bootstrapped: bool,
    last_bootstrap: Instant,
    /// The wait before the next small-table bootstrap, and the table's size at the last.
    small_bootstrap: (Duration, usize),
    dropped_events: u64,
    relays: Relays,
    relay_service: bool,
    /// This node's provider records, published again one by one.
    republish: Republish,
    /// Publications of the schedule in flight, by query.
    republishing: HashMap<kad::QueryId, Vec<u8>>,
    /// The connection manager: peers kept connected when idle, and when each was active.
    target: crate::ConnectionTarget,
    activity: Activity,
}

impl EventLoop {
    /// The peers whose breaker is not closed, shared with the handles.
    pub(crate) fn tripped(&self) -> crate::breaker::Tripped {
        self.breakers.tripped()
    }

    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        config: &crate::Config,
        (metrics, breaker_metrics): (Option<Metrics>, Option<BreakerMetrics>),
        (budget, out_budget): (Budget, Budget),
        rate: RateLimit,
    ) -> Self {
        EventLoop {
            swarm,
            commands,
            events,
            timeout: config.request_timeout,
            bulk_timeout: config.bulk_request_timeout,
            metrics,
            breakers: Breakers::default(),
            breaker_metrics,
            dials: HashMap::new(),
            requests: HashMap::new(),
            outbound: HashMap::new(),
            resend: HashMap::new(),
            queries: HashMap::new(),
            lookup_due: None,
            refusals: Throttle::new(REFUSAL_LOG_EVERY),
            rtt: HashMap::new(),
            addrs: ConnectedAddrs::default(),
            identified: HashSet::new(),
            observed: Observations::default(),
            budget,
            responding: HashMap::new(),
            out_budget,
            rate,
            strikes: Strikes::default(),
            bootstrapped: false,
            last_bootstrap: Instant::now(),
            small_bootstrap: (dht::SMALL_TABLE_BOOTSTRAP, 0),
            dropped_events: 0,
            relays: Relays::new(config.reachability),
            relay_service: config.serves_relay(),
            republish: Republish::new(
                config.provider_republish,
                config.provider_republish_gap,
                Instant::now(),
            ),
            republishing: HashMap::new(),
            target: config.target,
            activity: Activity::default(),
        }
    }

    pub(crate) async fn run(mut self) {
        let listening: Vec<_> = self.swarm.listeners().cloned().collect();
        for address in &listening {
            self.confirm_if_public(address);
        }
        self.offer_relay();
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.handle_command(cmd),
                    // Every handle is gone: the node is shutting down.
                    None => break,
                },
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                // A provider lookup's grace ran out (see `dht.rs`), between ticks.
                _ = tokio::time::sleep_until(self.lookup_due.unwrap_or_else(Instant::now)),
                    if self.lookup_due.is_some() => self.expire_queries(Instant::now()),
                _ = tick.tick() => {
                    self.expire();
                    self.bootstrap_if_small();
                    self.look_after_relays();
                    self.retire_relayed();
                    self.republish_due();
                    self.trim_connections();
                    crate::buffers::release_idle(std::time::Instant::now());
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

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Info { reply } => {
                let _ = reply.send(Ok(self.info()));
            }
            Command::Peers { reply } => {
                let _ = reply.send(Ok(self.peers()));
            }
            Command::RoutingTable { reply } => {
                let _ = reply.send(Ok(self.routing_table()));
            }
            Command::Dial {
                addr,
                lookup,
                reply,
            } => self.dial(addr, lookup, reply),
            Command::Block { peers, reply } => {
                let _ = reply.send(self.block(peers));
            }
            Command::Unblock { peers, reply } => {
                self.swarm.behaviour_mut().access.unblock(peers);
                let _ = reply.send(Ok(()));
            }
            Command::AllowOnly { peers, reply } => {
                self.swarm.behaviour_mut().access.allow_only(peers);
                let _ = reply.send(Ok(()));
            }
            Command::AllowAll { reply } => {
                self.swarm.behaviour_mut().access.allow_all();
                let _ = reply.send(Ok(()));
            }
            Command::Strike { peer } => self.strike(peer),
            Command::Subscribe { topic, reply } => {
                let _ = reply.send(self.subscribe(topic));
            }
            Command::Unsubscribe { topic } => self.unsubscribe(topic),
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::ReportGossip {
                id,
                source,
                verdict,
            } => self.report_gossip(id, source, verdict),
            Command::Request {
                peer,
                protocol,
                data,
                reply,
            } => self.request(peer, protocol, data, reply),
            Command::Respond { responder, data } => self.respond(*responder, data),
            Command::Provide { key, reply } => self.provide(key, reply),
            Command::Providers { key, reply } => self.providers(key, reply),
            Command::Unprovide { key } => {
                self.republish.remove(&key);
                self.swarm.behaviour_mut().kad.stop_providing(&key.into());
            }
        }
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.metrics {
            m.record(&event);
        }
        match event {
            SwarmEvent::Behaviour(ev) => self.handle_behaviour_event(ev),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if !self.relay_listening(listener_id, &address) {
                    info!(%address, "listening");
                    self.confirm_if_public(&address);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let why = reason
                    .err()
                    .map_or_else(|| "closed".to_owned(), |e| e.to_string());
                self.relay_listener_closed(listener_id, &why);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                self.relay_listener_closed(listener_id, &error.to_string());
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed")
            }
            other => self.connection_event(other),
        }
    }

    fn handle_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                self.identify_event(e);
            }
            BehaviourEvent::Ping(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                self.ping_event(e);
            }
            BehaviourEvent::Mdns(e) => self.mdns_event(e),
            BehaviourEvent::Kad(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                self.kad_event(e);
            }
            BehaviourEvent::Gossipsub(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                self.gossip_event(e);
            }
            BehaviourEvent::Sync(e) => self.request_event(Protocol::Sync, e),
            BehaviourEvent::Blob(e) => self.request_event(Protocol::Blob, e),
            BehaviourEvent::Service(e) => self.request_event(Protocol::Service, e),
            BehaviourEvent::Digest(e) => self.request_event(Protocol::Digest, e),
            BehaviourEvent::Dcutr(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                self.dcutr_event(e);
            }
            BehaviourEvent::Relay(e) => self.relay_client_event(e),
            BehaviourEvent::RelayServer(e) => {
                if let Some(m) = &self.metrics {
                    m.record(&e);
                }
                self.relay_server_event(e);
            }
            BehaviourEvent::Autonat(e) => self.autonat_event(e),
            #[cfg(feature = "upnp")]
            BehaviourEvent::Upnp(e) => self.upnp_event(e),
            _ => {}
        }
    }

    /// Answers every pending reply whose deadline has passed.
    fn expire(&mut self) {
        let now = Instant::now();
        let t = self.timeout;
        // A request that ran out of time counts against its peer's breaker (once: its
        // OutboundFailure, if libp2p reports one later, finds it gone).
        let late: Vec<PeerId> = self
            .requests
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .filter_map(|(id, _)| self.outbound.get(id).copied())
            .collect();
        for peer in late {
            self.breaker_failure(peer);
        }
        expire_map(&mut self.dials, now, t);
        expire_map(&mut self.requests, now, t);
        let requests = &self.requests;
        self.resend.retain(|id, _| requests.contains_key(id));
        self.outbound.retain(|id, _| requests.contains_key(id));
        // Normally released by ResponseSent or InboundFailure; this is the backstop.
        self.responding
            .retain(|_, (deadline, _)| *deadline + t > now);
        self.expire_queries(now);
    }
}

fn busy<T>(reply: Reply<T>) {
    let _ = reply.send(Err(Error::Busy(MAX_PENDING)));
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
