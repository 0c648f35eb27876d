//! The actor's side facing the network: overlay events, gossip validation, sync requests
//! and sending replication messages.

use lattice_crdt::sync::{Input, Message, SyncError};
use lattice_crdt::{ActorId, DocId};
use lattice_overlay::{Event, PeerId, Protocol, Verdict};
use tracing::{debug, warn};

use super::verify::Origin;
use super::{Actor, MAX_SENDS, MAX_SENDS_PER_PEER, MAX_SEND_BYTES, MAX_SEND_BYTES_PER_PEER};
use crate::auth::{actor_of_peer, peer_of_actor};
use crate::docs::wire::{SyncRequest, SyncResponse};

impl Actor {
    /// Sends a replication message to a peer in the background (bounded).
    pub(super) fn send(&mut self, to: ActorId, msg: Message) {
        let Some(peer) = peer_of_actor(&to) else {
            return;
        };
        let bytes = SyncRequest::Sync(msg).encode();
        let size = bytes.len();
        let (count, mine) = self.sending.get(&peer).copied().unwrap_or((0, 0));
        if self.sends.len() >= MAX_SENDS
            || count >= MAX_SENDS_PER_PEER
            || mine.saturating_add(size) > MAX_SEND_BYTES_PER_PEER.max(size)
            || self.sending_bytes.saturating_add(size) > MAX_SEND_BYTES
        {
            debug!(%peer, "too many sync messages in flight; dropping one");
            return;
        }
        self.sending.insert(peer, (count + 1, mine + size));
        self.sending_bytes += size;
        self.metrics.repair_sent(size);
        let overlay = self.overlay.clone();
        self.sends.spawn(async move {
            match overlay.request(peer, Protocol::Sync, bytes).await {
                Ok(resp) => {
                    if let Ok(SyncResponse::Refused(why)) = SyncResponse::decode(&resp) {
                        debug!(%peer, "peer refused a sync message: {why}");
                    }
                }
                Err(e) => debug!(%peer, "sync message not delivered: {e}"),
            }
            (peer, size)
        });
    }

    /// A message to `peer` of `size` bytes is no longer in flight.
    pub(super) fn sent(&mut self, peer: PeerId, size: usize) {
        self.sending_bytes -= size;
        if let Some((count, bytes)) = self.sending.get_mut(&peer) {
            *count -= 1;
            *bytes -= size;
            if *count == 0 {
                self.sending.remove(&peer);
            }
        }
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
        // Its last replica gone: look for others soon, not at the slow pace.
        if self
            .docs
            .get(&id)
            .is_some_and(|h| h.replica.peers().next().is_none())
        {
            self.find_soon(id);
        }
    }

    pub(super) async fn event(&mut self, e: Event) {
        match e {
            Event::Subscribed { peer, topic } => {
                self.subs.add(&topic, peer);
                if let Some(id) = self.topics.get(&topic).copied() {
                    self.peer_up(id, peer).await;
                }
            }
            Event::Unsubscribed { peer, topic } => {
                self.subs.remove(&topic, &peer);
                if let Some(id) = self.topics.get(&topic).copied() {
                    self.peer_down(id, peer).await;
                }
            }
            Event::PeerDisconnected { peer } => {
                self.subs.forget(&peer);
                // Every replica that counts the peer, however it learned of it (a topic
                // subscription, or a sync request of its own), lets it go.
                let Some(actor) = actor_of_peer(&peer) else {
                    return;
                };
                let ids: Vec<DocId> = self
                    .docs
                    .iter()
                    .filter(|(_, h)| h.replica.peers().any(|p| *p == actor))
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.peer_down(id, peer).await;
                }
            }
            Event::Gossip {
                topic,
                source,
                id,
                data,
                charge,
                ..
            } => match self.topics.get(&topic).copied() {
                Some(doc) => self.verify(
                    Origin::Gossip {
                        doc,
                        id,
                        source,
                        _charge: charge,
                    },
                    data,
                ),
                None => {
                    let _ = self.overlay.report_gossip(id, source, Verdict::Ignore);
                }
            },
            Event::Request {
                peer,
                protocol: Protocol::Sync,
                data,
                responder,
            } => {
                let responder = Box::new(responder);
                self.verify(Origin::Request { peer, responder }, data);
            }
            Event::Request {
                peer,
                protocol: Protocol::Digest,
                data,
                responder,
            } => self.serve_digest(peer, &data, responder),
            _ => {}
        }
    }

    /// Counts and logs a message the replica refused. Only what no honest peer sends
    /// (malformed, badly signed, self-contradicting) is reported to the overlay, which
    /// blocks peers that keep doing it; what an honest peer may send because it knows more
    /// or less than this replica is dropped without penalty.
    pub(super) fn rejected(&mut self, id: DocId, peer: PeerId, e: &SyncError) -> Verdict {
        if e.is_peers_fault() {
            return self.malformed(id, peer, e.to_string());
        }
        self.metrics.delta_rejected();
        debug!(doc = %id, %peer, "refused a document message: {e}");
        Verdict::Ignore
    }

    /// A message no honest peer sends: counted, logged, and a strike for its sender.
    pub(super) fn malformed(&mut self, id: DocId, peer: PeerId, why: String) -> Verdict {
        self.metrics.delta_rejected();
        warn!(doc = %id, %peer, "rejected a document message: {why}");
        let _ = self.overlay.strike(peer);
        Verdict::Reject
    }
}
