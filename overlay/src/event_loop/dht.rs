//! The DHT: provider records announced and looked up, peers looked up to be dialled, and
//! bootstrapping while the routing table is small.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::kad::store::RecordStore;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{kad, PeerId};
use tokio::time::Instant;
use tracing::debug;

use super::{busy, EventLoop, Pending, MAX_PENDING};
use crate::error::Error;
use crate::handle::Reply;

/// While the routing table is smaller than a Kademlia bucket (a small or young network),
/// re-run the bootstrap after this, so peers that joined after us are found in seconds
/// rather than at the next periodic bootstrap. Each run that finds no new peer doubles
/// the wait, up to [`SMALL_TABLE_BOOTSTRAP_MAX`]; a table that grows starts again at the
/// minimum. (A settled network of ten nodes bootstrapping every 5 s spent about 8 KB/s per
/// node on it.)
pub(super) const SMALL_TABLE_BOOTSTRAP: Duration = Duration::from_secs(5);
const SMALL_TABLE_BOOTSTRAP_MAX: Duration = Duration::from_secs(300);
const SMALL_TABLE: usize = 20;

/// A provider lookup answers this long after its first provider turned up, without
/// waiting for the rest of the query: peers that cannot be reached (behind NATs, gone)
/// keep a query open until their dials time out, seconds later, while providers found
/// together arrive within milliseconds of each other.
const PROVIDERS_GRACE: Duration = Duration::from_millis(100);

/// A DHT query waiting for its answer.
pub(super) enum Query {
    /// A first publication, asked for by the node: the key joins the republication
    /// schedule once it is known whether any peer took the record.
    Provide(Pending<()>, Vec<u8>),
    /// With the providers found so far, and when it answers without the rest once some
    /// were.
    Providers(Pending<Vec<PeerId>>, HashSet<PeerId>, Option<Instant>),
    /// A dial by peer id alone, waiting for the DHT to say where the peer is.
    FindPeer(Pending<PeerId>, PeerId),
}

/// Addresses dialled of those a lookup found for a peer (any peer may have named them).
const MAX_FOUND_ADDRS: usize = 16;
/// Why a dial by peer id found nothing to dial.
const NOT_FOUND: &str = "the DHT knows no address for this peer (give a full multiaddr)";

impl EventLoop {
    pub(super) fn provide(&mut self, key: Vec<u8>, reply: Reply<()>) {
        if self.queries.len() >= MAX_PENDING {
            // Published by the schedule instead, once it comes due (15 s).
            self.republish.published(key, false, Instant::now());
            return busy(reply);
        }
        match self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(key.clone().into())
        {
            Ok(id) => {
                let deadline = self.deadline();
                self.queries
                    .insert(id, Query::Provide(Pending { deadline, reply }, key));
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

    /// A peer lookup's result (kad reports it once, when the whole query ends): dial the
    /// addresses it found for the peer, unless the lookup reached the peer already (see
    /// [`EventLoop::found_by_identify`], which usually answers first).
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
            // The lookup itself reached the peer: done.
            _ if self.swarm.is_connected(&target) && self.identified.contains(&target) => {
                let _ = p.reply.send(Ok(target));
            }
            Some(mut addrs) => {
                debug!(peer = %target, ?addrs, "the DHT found the peer to dial");
                addrs.truncate(MAX_FOUND_ADDRS);
                let opts = DialOpts::peer_id(target)
                    .condition(PeerCondition::Always)
                    .addresses(addrs)
                    .build();
                self.start_dial(opts, p.reply, p.deadline);
            }
            None => {
                let _ = p.reply.send(Err(Error::Dial(NOT_FOUND.into())));
            }
        }
    }

    /// Starts the next publication the schedule has due, if any (see `republish.rs`).
    pub(super) fn republish_due(&mut self) {
        let now = Instant::now();
        let Some(key) = self.republish.take_due(now) else {
            return;
        };
        match self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(key.clone().into())
        {
            Ok(id) => {
                self.republishing.insert(id, key);
            }
            // The own store is full (a million keys): try again later like a lost one.
            Err(e) => {
                debug!("cannot publish a provider record again: {e}");
                self.republish.published(key, false, now);
            }
        }
    }

    /// Schedules the next publication of `key`, unless it was withdrawn meanwhile.
    fn schedule(&mut self, key: Vec<u8>, reached: bool) {
        let me = *self.swarm.local_peer_id();
        let kad = &mut self.swarm.behaviour_mut().kad;
        let record_key = kad::RecordKey::new(&key);
        if kad
            .store_mut()
            .providers(&record_key)
            .iter()
            .any(|r| r.provider == me)
        {
            self.republish.published(key, reached, Instant::now());
        }
    }

    /// `peer` identified itself: a lookup of it is done (kad reaches the peer it looks
    /// for, and reports the lookup only once the whole query ends, seconds later if some
    /// peers do not answer).
    pub(super) fn found_by_identify(&mut self, peer: PeerId) {
        let done: Vec<kad::QueryId> = self
            .queries
            .iter()
            .filter(|(_, q)| matches!(q, Query::FindPeer(_, t) if *t == peer))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                q.finish();
            }
            if let Some(Query::FindPeer(p, _)) = self.queries.remove(&id) {
                let _ = p.reply.send(Ok(peer));
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
                id,
                result,
                step,
                stats,
            } => match result {
                kad::QueryResult::Bootstrap(r) => debug!(ok = r.is_ok(), "DHT bootstrap step"),
                kad::QueryResult::StartProviding(r) => {
                    let reached = r.is_ok() && stats.num_successes() > 0;
                    if let Some(Query::Provide(p, key)) = self.queries.remove(&id) {
                        self.schedule(key, reached);
                        let _ = p
                            .reply
                            .send(r.map(|_| ()).map_err(|e| Error::Dht(e.to_string())));
                    } else if let Some(key) = self.republishing.remove(&id) {
                        self.schedule(key, reached);
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
        let (wait, size_then) = self.small_bootstrap;
        if self.last_bootstrap.elapsed() < wait {
            return;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        let size: usize = kad.kbuckets().map(|b| b.num_entries()).sum();
        if size > 0 && size < SMALL_TABLE {
            self.last_bootstrap = Instant::now();
            let wait = if size > size_then {
                SMALL_TABLE_BOOTSTRAP
            } else {
                (wait * 2).min(SMALL_TABLE_BOOTSTRAP_MAX)
            };
            self.small_bootstrap = (wait, size);
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
                Query::Provide(p, _) => p.deadline <= now,
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
                Some(Query::Provide(p, key)) => {
                    self.schedule(key, false);
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
                Query::Provide(..) | Query::FindPeer(..) => None,
            })
            .min();
    }
}
