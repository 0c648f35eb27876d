//! The actor's side of `/lattice/digest/1` (see [`crate::docs::digests`]): every
//! [`DIGEST_EVERY`] it compares the documents it shares with the next peer in turn, and it
//! answers peers that compare theirs. Documents found to differ get an anti-entropy
//! exchange ([`Input::Reconcile`]); the others cost nothing more.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lattice_crdt::sync::Input;
use lattice_crdt::{ActorId, DocId};
use lattice_overlay::{PeerId, Protocol, Responder};
use tracing::debug;

use super::Actor;
use crate::auth::{actor_of_peer, peer_of_actor};
use crate::docs::digests::{self, Shared};
use crate::docs::wire::{DigestRequest, DigestResponse};

/// How often the actor compares its shared documents with one peer.
pub(super) const DIGEST_EVERY: Duration = Duration::from_secs(2);
/// Comparisons of this node's in flight at once.
const MAX_IN_FLIGHT: usize = 4;

/// A comparison's answer, back in the actor.
pub(super) struct Answer {
    peer: PeerId,
    response: Result<DigestResponse, String>,
    /// For a comparison of totals: the digests compared.
    sent: Option<Shared>,
}

impl Actor {
    /// The documents shared with `peer` (whose replicas list it), with their digests.
    fn shared_with(&mut self, peer: &ActorId) -> Shared {
        self.docs
            .iter_mut()
            .filter(|(_, h)| h.replica.peers().any(|p| p == peer))
            .map(|(id, h)| (*id, h.digest()))
            .collect()
    }

    /// Starts a comparison with the next peer in turn among those sharing documents.
    pub(super) fn compare_next(&mut self) {
        if self.digests.len() >= MAX_IN_FLIGHT {
            return;
        }
        let peers: BTreeSet<ActorId> = self
            .docs
            .values()
            .flat_map(|h| h.replica.peers().copied())
            .collect();
        if peers.is_empty() {
            return;
        }
        // Peers whose requests keep failing (an open circuit breaker) are skipped while
        // another is there to compare with.
        let healthy: Vec<ActorId> = peers
            .iter()
            .filter(|a| !peer_of_actor(a).is_some_and(|p| self.overlay.failing(&p)))
            .copied()
            .collect();
        let pick = if healthy.is_empty() {
            peers.iter().copied().collect()
        } else {
            healthy
        };
        self.digest_turn = self.digest_turn.wrapping_add(1);
        let Some(actor) = pick.get(self.digest_turn % pick.len()).copied() else {
            return;
        };
        let shared = self.shared_with(&actor);
        let total = digests::total(&shared);
        self.ask(actor, DigestRequest::Total(total), Some(shared));
    }

    fn ask(&mut self, actor: ActorId, request: DigestRequest, sent: Option<Shared>) {
        let Some(peer) = peer_of_actor(&actor) else {
            return;
        };
        let overlay = self.overlay.clone();
        self.digests.spawn(async move {
            let response = match overlay
                .request(peer, Protocol::Digest, request.encode())
                .await
            {
                Ok(bytes) => DigestResponse::decode(&bytes).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            Answer {
                peer,
                response,
                sent,
            }
        });
    }

    /// A peer answered a comparison of ours.
    pub(super) async fn compared(&mut self, a: Answer) {
        let Some(actor) = actor_of_peer(&a.peer) else {
            return;
        };
        let shared = self.shared_with(&actor);
        match a.response {
            Ok(DigestResponse::Same) => {
                // The peer holds what these documents held when asked: where they still
                // hold the same, it holds what they hold now.
                let held: Vec<DocId> = a
                    .sent
                    .iter()
                    .flatten()
                    .filter(|(doc, then)| shared.get(doc) == Some(then))
                    .map(|(doc, _)| *doc)
                    .collect();
                self.peer_holds(actor, held).await;
            }
            Ok(DigestResponse::Buckets(theirs)) => {
                match digests::differing_buckets(&shared, &theirs) {
                    Some(wanted) if !wanted.is_empty() => {
                        self.ask(actor, DigestRequest::Docs(wanted), None);
                    }
                    Some(_) => {}
                    None => self.malformed_digest(a.peer, "buckets of the wrong size"),
                }
            }
            Ok(DigestResponse::Docs(theirs)) => match digests::differing_docs(&shared, &theirs) {
                Some(docs) => {
                    let same = digests::same_docs(&shared, &theirs);
                    self.peer_holds(actor, same).await;
                    for doc in docs {
                        debug!(%doc, peer = %a.peer, "digests differ; reconciling");
                        let _ = self.apply(doc, Input::Reconcile(actor)).await;
                    }
                }
                None => self.malformed_digest(a.peer, "a listing of the wrong size"),
            },
            Ok(DigestResponse::Refused(why)) => {
                debug!(peer = %a.peer, "peer refused a digest comparison: {why}");
            }
            Err(e) => debug!(peer = %a.peer, "digest comparison failed: {e}"),
        }
    }

    /// Tells each document's replica that `actor`'s holds exactly what it holds.
    async fn peer_holds(&mut self, actor: ActorId, docs: Vec<DocId>) {
        for doc in docs {
            let _ = self.apply(doc, Input::PeerHolds(actor)).await;
        }
    }

    fn malformed_digest(&mut self, peer: PeerId, why: &str) {
        debug!(%peer, "malformed digest answer: {why}");
        let _ = self.overlay.strike(peer);
    }

    /// A peer compares the documents it shares with this node.
    pub(super) fn serve_digest(&mut self, peer: PeerId, data: &[u8], responder: Responder) {
        let allowed = self.digest_served.allow(peer, Instant::now());
        if !allowed {
            let busy = DigestResponse::Refused("busy".into());
            let _ = self.overlay.respond(responder, busy.encode());
            return;
        }
        let response = match (actor_of_peer(&peer), DigestRequest::decode(data)) {
            (None, _) => DigestResponse::Refused("only Ed25519 peers replicate documents".into()),
            (Some(_), Err(e)) => {
                let _ = self.overlay.strike(peer);
                DigestResponse::Refused(format!("malformed: {e}"))
            }
            (Some(actor), Ok(DigestRequest::Total(theirs))) => {
                let shared = self.shared_with(&actor);
                if digests::total(&shared) == theirs {
                    DigestResponse::Same
                } else {
                    DigestResponse::Buckets(digests::buckets(&shared))
                }
            }
            (Some(actor), Ok(DigestRequest::Docs(wanted))) => {
                DigestResponse::Docs(digests::listing(&self.shared_with(&actor), &wanted))
            }
        };
        let _ = self.overlay.respond(responder, response.encode());
    }
}
