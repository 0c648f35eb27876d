//! The actor's periodic look over every document (every [`super::MAINTENANCE`]): lag
//! metrics, what peer replicas hold saved, compaction, provider lookups.

use lattice_crdt::sync::Input;
use lattice_crdt::DocId;
use tracing::warn;

use super::Actor;
use crate::store::Change;

impl Actor {
    /// Every [`MAINTENANCE`]: the writes each document lacks go to the metrics; what peer
    /// replicas hold is saved where it changed, and every document compacts (a replica
    /// does nothing when neither its log nor its stable cut moved and none of its own
    /// writes was left out as too young); the provider lookups that are due start.
    pub(super) async fn maintain(&mut self) {
        for (id, h) in &self.docs {
            self.metrics.doc_behind(id, h.replica.behind());
        }
        self.save_acks().await;
        let ids: Vec<DocId> = self.docs.keys().copied().collect();
        for id in ids {
            let _ = self.apply(id, Input::Compact).await;
        }
        self.announce_waiting();
        self.find_due();
    }

    /// Saves what each document's peer replicas hold where it changed since last saved,
    /// so a restarted node does not compact as if it had no peers.
    async fn save_acks(&mut self) {
        let mut changes = Vec::new();
        for (id, h) in &mut self.docs {
            let version = h.replica.acks_version();
            if version != h.acks_saved {
                h.acks_saved = version;
                changes.push(Change::PutAcks {
                    doc: *id,
                    acks: h.replica.acks().map(|(a, k)| (*a, k.clone())).collect(),
                });
            }
        }
        if changes.is_empty() {
            return;
        }
        // Not waited for: losing the last few minutes of these costs only early pruning.
        if let Err(e) = self.store.enqueue(changes).await {
            warn!("cannot save what peer replicas hold: {e}");
        }
    }
}
