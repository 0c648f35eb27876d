//! Joining a document by id: find peers that hold it (connected peers subscribed to its
//! topic first, then DHT provider records), and ask them for its genesis, which must hash
//! to the id.

use std::time::Duration;

use lattice_crdt::sync::Genesis;
use lattice_crdt::DocId;
use lattice_overlay::{Overlay, PeerId, Protocol};
use tracing::debug;

use super::wire::{SyncRequest, SyncResponse};
use super::DocsError;

/// Peers asked before giving up.
const MAX_CANDIDATES: usize = 16;
/// A peer that does not connect or answer this fast is skipped.
const PER_PEER: Duration = Duration::from_secs(10);
/// Longest names and writer lists a genesis may carry.
pub(super) const MAX_NAME: usize = 256;
pub(super) const MAX_WRITERS: usize = 1_000;

/// Checks a genesis a peer sent (or a user asked for).
pub(crate) fn check(g: &Genesis, id: Option<DocId>) -> Result<(), DocsError> {
    if id.is_some_and(|id| g.id() != id) {
        return Err(DocsError::BadRequest(
            "a peer answered with a genesis that does not hash to the document id".into(),
        ));
    }
    if g.name.is_empty() || g.name.len() > MAX_NAME {
        return Err(DocsError::BadRequest(format!(
            "document names are 1 to {MAX_NAME} bytes"
        )));
    }
    if g.writers.len() > MAX_WRITERS {
        return Err(DocsError::BadRequest(format!(
            "at most {MAX_WRITERS} writers at creation"
        )));
    }
    Ok(())
}

/// Finds the genesis of `id` from `known` peers or the DHT's providers.
pub(super) async fn find_genesis(
    overlay: Overlay,
    id: DocId,
    known: Vec<PeerId>,
) -> Result<Genesis, DocsError> {
    let me = overlay.peer_id();
    let mut tried = 0;
    for peer in known.iter().copied().take(MAX_CANDIDATES) {
        tried += 1;
        if let Some(g) = ask(&overlay, peer, id).await {
            return Ok(g);
        }
    }
    let providers = match crate::dht_keys::providers(&overlay, crate::dht_keys::doc(&id)).await {
        Ok(p) => p,
        Err(e) => {
            debug!(doc = %id, "provider lookup failed: {e}");
            Vec::new()
        }
    };
    for peer in providers
        .into_iter()
        .filter(|p| *p != me && !known.contains(p))
        .take(MAX_CANDIDATES.saturating_sub(tried))
    {
        if let Some(g) = ask(&overlay, peer, id).await {
            return Ok(g);
        }
    }
    Err(DocsError::NoReplica(id))
}

async fn ask(overlay: &Overlay, peer: PeerId, id: DocId) -> Option<Genesis> {
    let attempt = async {
        // Already connected peers answer the dial at once.
        if let Err(e) = overlay.dial_peer(peer).await {
            debug!(%peer, "cannot reach a possible replica: {e}");
            return None;
        }
        let bytes = overlay
            .request(peer, Protocol::Sync, SyncRequest::Genesis(id).encode())
            .await
            .ok()?;
        match SyncResponse::decode(&bytes).ok()? {
            SyncResponse::Genesis(g) if check(&g, Some(id)).is_ok() => Some(g),
            other => {
                debug!(%peer, ?other, "peer did not give a valid genesis");
                None
            }
        }
    };
    tokio::time::timeout(PER_PEER, attempt).await.ok().flatten()
}
