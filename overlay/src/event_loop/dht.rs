//! The DHT: provider records announced and looked up, peers looked up to be dialled, and
//! bootstrapping while the routing table is small.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{kad, PeerId};
use tokio::time::Instant;
use tracing::debug;

use super::{busy, EventLoop, Pending, MAX_PENDING};
use crate::error::Error;
use crate::handle::Reply;

/// While the routing table is smaller than a Kademlia bucket (a small or young network),
/// re-run the bootstrap this often, so peers that joined after us are found in seconds
/// rather than at the next periodic bootstrap.
const SMALL_TABLE_BOOTSTRAP: Duration = Duration::from_secs(5);
const SMALL_TABLE: usize = 20;

/// A provider lookup answers this long after its first provider turned up, without
/// waiting for the rest of the query: peers that cannot be reached (behind NATs, gone)
/// keep a query open until their dials time out, seconds later, while providers found
/// together arrive within milliseconds of each other.
const PROVIDERS_GRACE: Duration = Duration::from_millis(100);

/// A DHT query waiting for its answer.
pub(super) enum Query {
    Provide(Pending<()>),
    /// With the providers found so far, and when it answers without the rest once some
    /// were.
    Providers(Pending<Vec<PeerId>>, HashSet<PeerId>, Option<Instant>),
    /// A dial by peer id alone, waiting for the DHT to say where the peer is.
    FindPeer(Pending<PeerId>, PeerId),
}

/// Why a dial by peer id found nothing to dial.
const NOT_FOUND: &str = "the DHT knows no address for this peer (give a full multiaddr)";

impl EventLoop {
    pub(super) fn provide(&mut self, key: Vec<u8>, reply: Reply<()>) {
        if self.queries.len() >= MAX_PENDING {
            return busy(reply);
        }
        match self.swarm.behaviour_mut().kad.start_providing(key.into()) {
            Ok(id) => {
                let deadline = self.deadline();
                self.queries
                    .insert(id, Query::Provide(Pending { deadline, reply }));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Dht(e.to_string())));
            }
        }
    }

    pub(super) fn providers(&mut self, key: Vec<u8>, reply: Reply<Vec<PeerId>>) {
        if self.queries.len() >= MAX_PENDING {
            return busy(reply);
        }
        let id = self.swarm.behaviour_mut().kad.get_providers(key.into());
        let deadline = self.deadline();
        self.queries.insert(
            id,
            Query::Providers(Pending { deadline, reply }, HashSet::new(), None),
        );
    }

    /// Looks `peer` up in the DHT (the lookup of its own id, which ends at the peer if
    /// anyone knows it), then dials the addresses found; `reply` answers as a dial does.
    pub(super) fn find_then_dial(&mut self, peer: PeerId, reply: Reply<PeerId>) {
        if self.queries.len() >= MAX_PENDING {
            return busy(reply);
        }
        let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
        let deadline = self.deadline();
        self.queries
            .insert(id, Query::FindPeer(Pending { deadline, reply }, peer));
    }

    /// A step of a peer lookup: dial the peer as soon as some answer carries its
    /// addresses; fail once the lookup has ended without them.
    fn found_peers(&mut self, id: kad::QueryId, peers: &[kad::PeerInfo], last: bool) {
        let Some(Query::FindPeer(_, target)) = self.queries.get(&id) else {
            return;
        };
        let target = *target;
        let addrs = peers
            .iter()
            .find(|p| p.peer_id == target && !p.addrs.is_empty())
            .map(|p| p.addrs.clone());
        if addrs.is_none() && !last {
            return;
        }
        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            q.finish();
        }
        let Some(Query::FindPeer(p, _)) = self.queries.remove(&id) else {
            return;
        };
        match addrs {
            Some(addrs) => {
                debug!(peer = %target, ?addrs, "the DHT found the peer to dial");
                let opts = DialOpts::peer_id(target)
                    .condition(PeerCondition::Always)
                    .addresses(addrs)
                    .build();
                self.start_dial(opts, p.reply);
            }
            None => {
                let _ = p.reply.send(Err(Error::Dial(NOT_FOUND.into())));
            }
        }
    }

    pub(super) fn kad_event(&mut self, e: kad::Event) {
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
                kad::QueryResult::GetClosestPeers(r) => {
                    let peers = match &r {
                        Ok(ok) => &ok.peers[..],
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => &peers[..],
                    };
                    self.found_peers(id, peers, step.last);
                }
                kad::QueryResult::GetProviders(r) => {
                    if let Some(Query::Providers(_, found, first)) = self.queries.get_mut(&id) {
                        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                            found.extend(providers);
                            if !found.is_empty() && first.is_none() {
                                let due = Instant::now() + PROVIDERS_GRACE;
                                *first = Some(due);
                                self.lookup_due = Some(self.lookup_due.map_or(due, |d| d.min(due)));
                            }
                        }
                    }
                    if step.last {
                        if let Some(Query::Providers(p, found, _)) = self.queries.remove(&id) {
                            let _ = p.reply.send(Ok(found.into_iter().collect()));
                        }
                    }
                }
                _ => {}
            },
            _ => {}
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

    /// Ends queries past their deadline: a provide fails with a timeout; a lookup answers
    /// with what it found so far (also once [`PROVIDERS_GRACE`] has passed since its
    /// first provider).
    pub(super) fn expire_queries(&mut self, now: Instant) {
        let late: Vec<kad::QueryId> = self
            .queries
            .iter()
            .filter(|(_, q)| match q {
                Query::Provide(p) => p.deadline <= now,
                Query::Providers(p, _, due) => p.deadline <= now || due.is_some_and(|t| t <= now),
                Query::FindPeer(p, _) => p.deadline <= now,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                q.finish();
            }
            match self.queries.remove(&id) {
                Some(Query::Provide(p)) => {
                    let _ = p.reply.send(Err(Error::Timeout(self.timeout)));
                }
                Some(Query::Providers(p, found, _)) => {
                    let _ = p.reply.send(Ok(found.into_iter().collect()));
                }
                Some(Query::FindPeer(p, _)) => {
                    let _ = p.reply.send(Err(Error::Timeout(self.timeout)));
                }
                None => {}
            }
        }
        self.lookup_due = self
            .queries
            .values()
            .filter_map(|q| match q {
                Query::Providers(_, _, due) => *due,
                Query::Provide(_) | Query::FindPeer(..) => None,
            })
            .min();
    }
}
