//! Announcing hosted documents in the DHT and finding their other replicas there, on a
//! bounded schedule whose cost does not grow with the number of documents: a document
//! with no connected replica looks again soon, one with replicas rarely, and at most a few
//! lookups start per maintenance round.

use std::time::Duration;

use lattice_crdt::DocId;
use lattice_overlay::Overlay;
use tracing::debug;

use super::{Actor, MAX_BACKGROUND};
use crate::now_ms;

/// A document with no connected replica looks its providers up again after this, doubling
/// each time up to [`FIND_SLOW`]; one with replicas every [`FIND_SLOW`] (to find replicas
/// its connected ones do not reach). At most [`FINDS_PER_ROUND`] lookups start per
/// maintenance round, so their cost does not grow with the number of documents. The DHT
/// record itself is published again by the overlay on its own spread-out schedule.
const FIND_FIRST: Duration = Duration::from_secs(30);
const FIND_SLOW: Duration = Duration::from_secs(30 * 60);
const FINDS_PER_ROUND: usize = 4;

impl Actor {
    /// Announces that this node provides `id` in the DHT (the overlay publishes the record
    /// again on its schedule from then on), and connects to other providers.
    pub(super) fn announce(&mut self, id: DocId) {
        self.find_soon(id);
        if self.background.len() >= MAX_BACKGROUND {
            // Many documents at once (a start with hundreds stored): later, in turn.
            self.unannounced.insert(id);
            return;
        }
        let overlay = self.overlay.clone();
        self.background.spawn(async move {
            if let Err(e) = overlay.provide(crate::dht_keys::doc(&id)).await {
                debug!(doc = %id, "cannot announce the document in the DHT: {e}");
            }
            find_replicas(&overlay, id).await;
        });
    }

    /// Looks `id`'s providers up again after [`FIND_FIRST`] if it has no replica by then.
    pub(super) fn find_soon(&mut self, id: DocId) {
        self.finds
            .insert(id, (now_ms() + FIND_FIRST.as_millis() as u64, FIND_FIRST));
    }

    /// Starts the provider lookups that are due, at most [`FINDS_PER_ROUND`].
    pub(super) fn find_due(&mut self) {
        let now = now_ms();
        let mut due: Vec<(u64, DocId)> = self
            .finds
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, (at, _))| (*at, *id))
            .collect();
        due.sort_unstable();
        let mut started = 0;
        for (_, id) in due {
            if started == FINDS_PER_ROUND || self.background.len() >= MAX_BACKGROUND {
                return;
            }
            let Some(h) = self.docs.get(&id) else {
                self.finds.remove(&id);
                continue;
            };
            let lonely = h.replica.peers().next().is_none();
            let backoff = self.finds.get(&id).map_or(FIND_FIRST, |f| f.1);
            let slow = (now + FIND_SLOW.as_millis() as u64, FIND_SLOW);
            if !lonely && backoff < FIND_SLOW {
                // Replicas came meanwhile: nothing to look for until the slow round.
                self.finds.insert(id, slow);
                continue;
            }
            let next = if lonely {
                let b = (backoff * 2).min(FIND_SLOW);
                (now + b.as_millis() as u64, b)
            } else {
                slow
            };
            self.finds.insert(id, next);
            started += 1;
            let overlay = self.overlay.clone();
            self.background
                .spawn(async move { find_replicas(&overlay, id).await });
        }
    }

    /// Announces documents that waited for room in the background work.
    pub(super) fn announce_waiting(&mut self) {
        while self.background.len() < MAX_BACKGROUND {
            let Some(id) = self.unannounced.pop_first() else {
                break;
            };
            if self.docs.contains_key(&id) {
                self.announce(id);
            }
        }
    }
}

/// Looks up the providers of `id` and connects to up to 16 of them.
async fn find_replicas(overlay: &Overlay, id: DocId) {
    let me = overlay.peer_id();
    let Ok(providers) = crate::dht_keys::providers(overlay, crate::dht_keys::doc(&id)).await else {
        return;
    };
    for peer in providers.into_iter().filter(|p| *p != me).take(16) {
        let _ = overlay.dial_peer(peer).await;
    }
}
