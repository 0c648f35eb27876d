//! What a storage commit's outcome does: a durable commit acknowledges its writes; a
//! failed one fails every write waiting on the document and undoes what was not
//! acknowledged.

use lattice_crdt::sync::Input;
use lattice_crdt::DocId;
use tracing::error;

use super::Actor;
use crate::docs::DocsError;
use crate::store::StoreError;

impl Actor {
    /// A commit of `id`'s changes finished; `ticket` is the last write it held.
    pub(super) async fn committed(
        &mut self,
        id: DocId,
        ticket: Option<u64>,
        r: Result<(), StoreError>,
    ) {
        match r {
            Ok(()) => {
                if let Some(ticket) = ticket {
                    let _ = self.apply(id, Input::Persisted { ticket }).await;
                }
                // A burst of writes compacts as it goes, not only at the next maintenance.
                if self
                    .docs
                    .get(&id)
                    .is_some_and(|h| h.replica.compaction_due())
                {
                    let _ = self.apply(id, Input::Compact).await;
                }
            }
            Err(e) => {
                self.store_failed(id, &e);
                // Undo what was not acknowledged, so a later commit cannot make a write
                // visible that its client was told failed.
                let _ = self.apply(id, Input::PersistFailed).await;
            }
        }
    }

    /// A commit failed: writes waiting on this document will never be acknowledged.
    pub(super) fn store_failed(&mut self, id: DocId, e: &StoreError) {
        error!(doc = %id, "storage failed; pending writes are not durable: {e}");
        let failed: Vec<u64> = self
            .acks
            .iter()
            .filter(|(_, a)| a.doc == id)
            .map(|(t, _)| *t)
            .collect();
        for tag in failed {
            if let Some(a) = self.acks.remove(&tag) {
                let _ = a.reply.send(Err(DocsError::Store(e.again())));
            }
        }
    }
}
