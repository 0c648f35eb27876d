//! The event loop's side that carries out [`Command`]s from handles: snapshots, dials,
//! the allow/block list, gossip, requests, DHT records, and the deadlines of pending
//! replies.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::multiaddr::Protocol as AddrPart;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::DialError;
use libp2p::{gossipsub, kad, Multiaddr, PeerId};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    busy, EventLoop, Pending, Query, MAX_PENDING, SMALL_RESPONSE, SMALL_TABLE,
    SMALL_TABLE_BOOTSTRAP,
};
use crate::error::Error;
use crate::event::{GossipId, Verdict};
use crate::handle::{Command, Info, PeerInfo, Reply};
use crate::protocols::Protocol;

impl EventLoop {
    pub(super) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    pub(super) fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Info(reply) => {
                let _ = reply.send(Ok(self.info()));
            }
            Command::Peers(reply) => {
                let _ = reply.send(Ok(self.peers()));
            }
            Command::Dial(addr, reply) => self.dial(addr, reply),
            Command::Block(peers, reply) => {
                let done = if self.swarm.behaviour_mut().access.block(peers) {
                    Ok(())
                } else {
                    Err(Error::Limit(format!(
                        "at most {} peers can be blocked",
                        crate::access::MAX_BLOCKED
                    )))
                };
                let _ = reply.send(done);
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
            Command::Unsubscribe(topic) => {
                let t = gossipsub::IdentTopic::new(topic);
                self.swarm.behaviour_mut().gossipsub.unsubscribe(&t);
            }
            Command::Unprovide(key) => {
                self.swarm.behaviour_mut().kad.stop_providing(&key.into());
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
                let id = match protocol {
                    Protocol::Sync => b.sync.send_request(&peer, data),
                    Protocol::Blob => b.blob.send_request(&peer, data),
                    Protocol::Service => b.service.send_request(&peer, data),
                };
                self.requests.insert(
                    id,
                    Pending {
                        deadline: self.deadline(),
                        reply,
                    },
                );
            }
            Command::Strike(peer) => {
                if self.strikes.strike(peer, std::time::Instant::now()) {
                    warn!(%peer, "blocking a peer that keeps sending invalid input");
                    self.swarm.behaviour_mut().access.block(vec![peer]);
                }
            }
            Command::Respond(mut r, data) => {
                // Held until libp2p reports the response sent (or failed): a requester
                // that reads slowly keeps at most its share of responses in memory. A
                // large answer reserved its share before it was built.
                let charge = r
                    .reserved
                    .take()
                    .or_else(|| self.out_budget.charge(r.peer, data.len()));
                // A small answer goes out even over budget (uncharged): peers that read
                // slowly must not silence the node's "ok" and "refused" to everyone else.
                let charge = match charge {
                    Some(c) => Some(c),
                    None if data.len() <= SMALL_RESPONSE => None,
                    None => {
                        debug!(peer = %r.peer, len = data.len(), "response over the peer's budget; dropped");
                        return;
                    }
                };
                // Every behaviour shares the codec; the channel knows its own stream.
                let b = self.swarm.behaviour_mut();
                match b.sync.send_response(r.channel, data) {
                    Ok(()) => {
                        if let Some(charge) = charge {
                            let deadline = self.deadline();
                            self.responding
                                .insert((r.protocol, r.id), (deadline, charge));
                        }
                    }
                    Err(data) => {
                        debug!(len = data.len(), "response not sent: the requester is gone")
                    }
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
        let blocked = access.blocked().copied().collect();
        let allow_only = access.allow_only_set().map(|s| s.iter().copied().collect());
        let dht_peers = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        Info {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: self.swarm.listeners().cloned().collect(),
            external_addrs: self.swarm.external_addresses().cloned().collect(),
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
                peer: *p,
                addrs: self.addrs.of(p),
                rtt: self.rtt.get(p).copied(),
                connected: true,
                in_dht: dht.contains_key(p),
            })
            .collect();
        for (p, addrs) in dht {
            if !connected.contains(&p) {
                out.push(PeerInfo {
                    peer: p,
                    addrs,
                    rtt: None,
                    connected: false,
                    in_dht: true,
                });
            }
        }
        out.sort_by_key(|p| (!p.connected, p.peer.to_string()));
        out
    }

    fn dial(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
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

    pub(super) fn bootstrap_if_small(&mut self) {
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
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        let t = self.timeout;
        expire_map(&mut self.dials, now, t);
        expire_map(&mut self.requests, now, t);
        // Normally released by ResponseSent or InboundFailure; this is the backstop.
        self.responding
            .retain(|_, (deadline, _)| *deadline + t > now);
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
