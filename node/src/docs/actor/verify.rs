//! Stages 1 and 3 of the validation funnel (`lattice_crdt::sync::funnel`) for peers'
//! messages, off the async threads: decoding a message of up to 4 MiB and checking every
//! delta's signature runs on a blocking thread, at most [`super::MAX_VERIFYING`] at once.
//! The actor then feeds what passed to the replica as [`Input::Verified`], which runs only
//! the checks that need the document's state.

use std::sync::Arc;

use lattice_crdt::sync::{self, Input, Message, SyncError, Verified};
use lattice_crdt::{ActorId, DocId};
use lattice_overlay::{policy::Charge, GossipId, PeerId, Responder, Verdict};
use tracing::warn;

use super::{Actor, MAX_VERIFYING};
use crate::auth::{actor_of_peer, NodeAuth};
use crate::docs::wire::{SyncRequest, SyncResponse};
use crate::now_ms;

/// Where a checked message came from, and how to answer it.
pub(super) enum Origin {
    /// Gossip on the topic of `doc`; its bytes stay charged to the sender until judged.
    Gossip {
        doc: DocId,
        id: GossipId,
        source: PeerId,
        _charge: Charge,
    },
    /// A `/lattice/sync/1` request.
    Request {
        peer: PeerId,
        responder: Box<Responder>,
    },
}

/// What a peer's message turned out to be.
pub(super) enum Body {
    Sync(Verified),
    Genesis(DocId),
}

/// A message back from the blocking pool.
pub(super) struct Checked {
    origin: Origin,
    result: Result<Body, String>,
}

fn check(data: &[u8], gossip_doc: Option<DocId>, auth: &NodeAuth) -> Result<Body, String> {
    let msg = match gossip_doc {
        Some(doc) => match Message::decode(data).map_err(|e| e.to_string())? {
            m @ (Message::Delta(_) | Message::Evidence { .. }) if m.doc() == doc => m,
            _ => return Err("not a delta or evidence of this document".into()),
        },
        None => match SyncRequest::decode(data).map_err(|e| format!("malformed request: {e}"))? {
            SyncRequest::Genesis(id) => return Ok(Body::Genesis(id)),
            SyncRequest::Sync(m) => m,
        },
    };
    sync::verify(msg, auth, sync::Config::default().max_delta_bytes)
        .map(Body::Sync)
        .map_err(|e| e.to_string())
}

impl Actor {
    /// Decodes and verifies a peer's message on a blocking thread; the result comes back
    /// to [`Actor::checked`]. Over [`MAX_VERIFYING`], gossip is ignored and requests are
    /// refused as busy.
    pub(super) fn verify(&mut self, origin: Origin, data: Vec<u8>) {
        if self.verifying.len() >= MAX_VERIFYING {
            match origin {
                Origin::Gossip { id, source, .. } => {
                    let _ = self.overlay.report_gossip(id, source, Verdict::Ignore);
                }
                Origin::Request { responder, .. } => {
                    let resp = SyncResponse::Refused("busy".into()).encode();
                    let _ = self.overlay.respond(*responder, resp);
                }
            }
            return;
        }
        let auth: Arc<NodeAuth> = self.auth.clone();
        let gossip_doc = match &origin {
            Origin::Gossip { doc, .. } => Some(*doc),
            Origin::Request { .. } => None,
        };
        self.verifying.spawn_blocking(move || Checked {
            result: check(&data, gossip_doc, &auth),
            origin,
        });
    }

    /// Acts on a checked message: feeds it to its replica and answers the peer.
    pub(super) async fn checked(&mut self, c: Checked) {
        match c.origin {
            Origin::Gossip {
                doc, id, source, ..
            } => {
                let verdict = match c.result {
                    Err(why) => self.malformed(doc, source, why),
                    Ok(Body::Genesis(_)) => Verdict::Ignore,
                    Ok(Body::Sync(msg)) => self.gossip(doc, source, msg).await,
                };
                let _ = self.overlay.report_gossip(id, source, verdict);
            }
            Origin::Request { peer, responder } => {
                let resp = match c.result {
                    Err(why) => {
                        self.metrics.delta_rejected();
                        warn!(%peer, "refused a sync request: {why}");
                        let _ = self.overlay.strike(peer);
                        SyncResponse::Refused(why)
                    }
                    Ok(Body::Genesis(id)) => match self.docs.get(&id) {
                        Some(h) => SyncResponse::Genesis(h.meta.genesis.clone()),
                        None => SyncResponse::Refused(format!("no document {id} here")),
                    },
                    Ok(Body::Sync(msg)) => self.sync_request(peer, msg).await,
                };
                let _ = self.overlay.respond(*responder, resp.encode());
            }
        }
    }

    /// A verified delta (or evidence) from a document's topic. Forwarded (accepted) only if
    /// it changed something here: a delta that applied, or evidence that caught someone. A
    /// duplicate, a delta held back for a gap, or one by a banned author goes no further
    /// (anti-entropy carries what is due), so a replayed message cannot ride the mesh.
    async fn gossip(&mut self, doc: DocId, source: PeerId, msg: Verified) -> Verdict {
        let progress = |a: &Self| {
            a.docs.get(&doc).map(|h| {
                let s = h.replica.stats();
                // A fold that replaced held entries is news too: relayed, so compaction
                // reaches replicas beyond the author's mesh peers.
                s.applied + s.equivocations + s.folded
            })
        };
        let Some(before) = progress(self) else {
            return Verdict::Ignore;
        };
        let from = actor_of_peer(&source).unwrap_or(ActorId([0; 32]));
        // A fresh write's clock against ours (see `docs::clocks`).
        let stamp = match msg.message() {
            Message::Delta(d) => Some((d.author, d.hlc.millis, d.seqs.first == d.seqs.last)),
            _ => None,
        };
        match self.apply(doc, Input::Verified { from, msg }).await {
            Err(e) => {
                if let (Some((author, hlc, _)), SyncError::Clock(_)) = (stamp, &e) {
                    self.clocks.record(author, hlc, now_ms(), true);
                }
                self.rejected(doc, source, &e)
            }
            Ok(()) if progress(self).is_some_and(|after| after > before) => {
                if let Some((author, hlc, single)) = stamp {
                    let now = now_ms();
                    self.clocks.record(author, hlc, now, false);
                    // Sync lag: a peer's fresh write, live (repairs bring old news, a
                    // fold carries the clock of a run of writes, and this node's own
                    // writes coming back say nothing about the network).
                    if let Some(h) = self.docs.get_mut(&doc) {
                        if single && author != self.me && !h.replica.is_catching_up() {
                            let lag_ms = now.saturating_sub(hlc);
                            h.lags.record(now, lag_ms);
                            self.metrics.sync_lag(&doc, lag_ms);
                        }
                    }
                }
                Verdict::Accept
            }
            Ok(()) => Verdict::Ignore,
        }
    }

    async fn sync_request(&mut self, peer: PeerId, msg: Verified) -> SyncResponse {
        let id = msg.message().doc();
        if !self.docs.contains_key(&id) {
            return SyncResponse::Refused(format!("no document {id} here"));
        }
        // A peer syncing a document with us replicates it.
        self.peer_up(id, peer).await;
        let from = actor_of_peer(&peer).unwrap_or(ActorId([0; 32]));
        match self.apply(id, Input::Verified { from, msg }).await {
            Ok(()) => SyncResponse::Ok,
            Err(e) => {
                self.rejected(id, peer, &e);
                SyncResponse::Refused(e.to_string())
            }
        }
    }
}
