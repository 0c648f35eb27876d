//! What the documents service answers with: plain domain values. The control socket turns
//! them into its wire types in `control/convert.rs`.

use std::collections::BTreeMap;

use lattice_crdt::sync::Standing;
use lattice_crdt::{ActorId, DocId};

/// A hosted document at a glance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocSummary {
    pub id: DocId,
    /// The local alias: the name it was created with.
    pub name: String,
    pub open: bool,
    pub owner: ActorId,
    /// BLAKE3 of the canonical content: equal digests, equal documents.
    pub digest: [u8; 32],
    /// Top-level keys.
    pub keys: usize,
    /// Deltas held (fewer once authors fold).
    pub deltas: usize,
    /// Connected peers known to replicate the document.
    pub replicas: usize,
    /// How long peers' recent writes took to be applied here.
    pub lag: Option<super::LagStats>,
    /// Writes known (from peers' summaries and deltas seen) but not yet applied here.
    pub behind: u64,
    /// Bytes of the deltas held.
    pub log_bytes: u64,
    /// Bytes of the content, encoded.
    pub state_bytes: u64,
}

/// A write, durable here under this node's sequence number `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub doc: DocId,
    pub seq: u64,
    /// The write's trace id ([`crate::trace::write_id`]).
    pub trace: String,
}

/// What this node held of a document at a cut ([`lattice_crdt::sync::Replica::cut`]).
#[derive(Clone, Debug)]
pub struct DocCut {
    pub id: DocId,
    /// This node's author id.
    pub me: ActorId,
    pub at_ms: u64,
    /// For each author, its writes held here at the cut: 1 to this.
    pub cut: Vec<(ActorId, u64)>,
    /// The same for all held now.
    pub held: Vec<(ActorId, u64)>,
    /// The digest of the document holding exactly the cut's writes.
    pub digest: [u8; 32],
    /// A fold held here spans the cut (its writes before the cut are left out).
    pub straddled: bool,
}

/// Who may write a document.
#[derive(Clone, Debug)]
pub struct WriterList {
    pub doc: DocId,
    pub open: bool,
    pub owner: ActorId,
    /// The writers of a closed document and their standing; empty for an open one.
    pub writers: Vec<(ActorId, Standing)>,
}

/// What one applied change (a local write, a delta from a peer, or a batch of them) did
/// to a document's top-level keys; a removed key maps to null.
#[derive(Clone, Debug)]
pub struct Changed {
    pub doc: DocId,
    pub local: bool,
    /// Whose deltas were applied.
    pub authors: Vec<ActorId>,
    pub changes: BTreeMap<String, serde_json::Value>,
}
