//! The actor's side facing the network: overlay events, gossip validation, sync requests
//! and sending replication messages.

use lattice_crdt::sync::{Input, Message};
use lattice_crdt::{ActorId, DocId};
use lattice_overlay::{protocols, Event, PeerId, Responder, Verdict};
use tracing::{debug, warn};

use super::{Actor, MAX_SENDS, MAX_STRIKES, MAX_STRIKE_PEERS, MAX_SUBS};
use crate::auth::{actor_of_peer, peer_of_actor};
use crate::docs::wire::{SyncRequest, SyncResponse};

impl Actor {
    /// Sends a replication message to a peer in the background (bounded).
    pub(super) fn send(&mut self, to: ActorId, msg: Message) {
        let Some(peer) = peer_of_actor(&to) else {
            return;
        };
        if self.sends.len() >= MAX_SENDS {
            debug!(%peer, "too many sync messages in flight; dropping one");
            return;
        }
        let bytes = SyncRequest::Sync(msg).encode();
        self.metrics.repair_sent(bytes.len());
        let overlay = self.overlay.clone();
        self.sends.spawn(async move {
            match overlay.request(peer, protocols::SYNC, bytes).await {
                Ok(resp) => {
                    if let Ok(SyncResponse::Refused(why)) = SyncResponse::decode(&resp) {
                        debug!(%peer, "peer refused a sync message: {why}");
                    }
                }
                Err(e) => debug!(%peer, "sync message not delivered: {e}"),
            }
        });
    }

    pub(super) async fn peer_up(&mut self, id: DocId, peer: PeerId) {
        let Some(actor) = actor_of_peer(&peer) else {
            return;
        };
        let known = self
            .docs
            .get(&id)
            .is_some_and(|h| h.replica.peers().any(|p| *p == actor));
        if !known {
            let _ = self.apply(id, Input::PeerUp(actor)).await;
        }
    }

    async fn peer_down(&mut self, id: DocId, peer: PeerId) {
        if let Some(actor) = actor_of_peer(&peer) {
            let _ = self.apply(id, Input::PeerDown(actor)).await;
        }
    }

    pub(super) async fn event(&mut self, e: Event) {
        match e {
            Event::Subscribed { peer, topic } => {
                let new = self.subs_len < MAX_SUBS
                    && self.subs.entry(topic.clone()).or_default().insert(peer);
                self.subs_len += usize::from(new);
                if let Some(id) = self.topics.get(&topic).copied() {
                    self.peer_up(id, peer).await;
                }
            }
            Event::Unsubscribed { peer, topic } => {
                self.forget_sub(&topic, &peer);
                if let Some(id) = self.topics.get(&topic).copied() {
                    self.peer_down(id, peer).await;
                }
            }
            Event::PeerDisconnected { peer } => {
                let topics: Vec<String> = self
                    .subs
                    .iter()
                    .filter(|(_, s)| s.contains(&peer))
                    .map(|(t, _)| t.clone())
                    .collect();
                for topic in topics {
                    self.forget_sub(&topic, &peer);
                    if let Some(id) = self.topics.get(&topic).copied() {
                        self.peer_down(id, peer).await;
                    }
                }
            }
            Event::Gossip {
                topic,
                source,
                id,
                data,
                ..
            } => {
                let verdict = self.gossip(&topic, source, &data).await;
                let _ = self.overlay.report_gossip(id, source, verdict);
            }
            Event::Request {
                peer,
                protocol,
                data,
                responder,
            } if protocol == protocols::SYNC => self.request(peer, &data, responder).await,
            _ => {}
        }
    }

    fn forget_sub(&mut self, topic: &str, peer: &PeerId) {
        if let Some(s) = self.subs.get_mut(topic) {
            if s.remove(peer) {
                self.subs_len -= 1;
            }
            if s.is_empty() {
                self.subs.remove(topic);
            }
        }
    }

    /// Validates and applies a delta published on a document's topic.
    async fn gossip(&mut self, topic: &str, source: PeerId, data: &[u8]) -> Verdict {
        let Some(id) = self.topics.get(topic).copied() else {
            return Verdict::Ignore;
        };
        let msg = match Message::decode(data) {
            Ok(m @ Message::Delta(_)) if m.doc() == id => m,
            Ok(_) => {
                return self
                    .rejected(id, source, "not a delta of this document".into())
                    .await
            }
            Err(e) => return self.rejected(id, source, e.to_string()).await,
        };
        let from = actor_of_peer(&source).unwrap_or(ActorId([0; 32]));
        match self.apply(id, Input::Message { from, msg }).await {
            Ok(()) => Verdict::Accept,
            Err(e) => self.rejected(id, source, e.to_string()).await,
        }
    }

    /// Counts and logs a refused message, and penalises its sender.
    async fn rejected(&mut self, id: DocId, peer: PeerId, why: String) -> Verdict {
        self.metrics.delta_rejected();
        warn!(doc = %id, %peer, "rejected a document message: {why}");
        self.strike(peer).await;
        Verdict::Reject
    }

    /// A peer that earns [`MAX_STRIKES`] within a strike window is blocked (`lattice net
    /// unblock` lets it back).
    async fn strike(&mut self, peer: PeerId) {
        if self.strikes.len() >= MAX_STRIKE_PEERS && !self.strikes.contains_key(&peer) {
            return;
        }
        let n = self.strikes.entry(peer).or_insert(0);
        *n += 1;
        if *n == MAX_STRIKES {
            warn!(%peer, "blocking a peer that keeps sending invalid document messages");
            if let Err(e) = self.overlay.block(vec![peer]).await {
                warn!(%peer, "cannot block the peer: {e}");
            }
        }
    }

    /// Answers a `/lattice/sync/1` request.
    async fn request(&mut self, peer: PeerId, data: &[u8], responder: Responder) {
        let resp = match SyncRequest::decode(data) {
            Err(e) => {
                self.metrics.delta_rejected();
                warn!(%peer, "malformed sync request: {e}");
                self.strike(peer).await;
                SyncResponse::Refused(format!("malformed request: {e}"))
            }
            Ok(SyncRequest::Genesis(id)) => match self.docs.get(&id) {
                Some(h) => SyncResponse::Genesis(h.meta.genesis.clone()),
                None => SyncResponse::Refused(format!("no document {id} here")),
            },
            Ok(SyncRequest::Sync(msg)) => {
                let id = msg.doc();
                if self.docs.contains_key(&id) {
                    // A peer syncing a document with us replicates it.
                    self.peer_up(id, peer).await;
                    let from = actor_of_peer(&peer).unwrap_or(ActorId([0; 32]));
                    match self.apply(id, Input::Message { from, msg }).await {
                        Ok(()) => SyncResponse::Ok,
                        Err(e) => {
                            self.rejected(id, peer, e.to_string()).await;
                            SyncResponse::Refused(e.to_string())
                        }
                    }
                } else {
                    SyncResponse::Refused(format!("no document {id} here"))
                }
            }
        };
        let _ = self.overlay.respond(responder, resp.encode());
    }
}
