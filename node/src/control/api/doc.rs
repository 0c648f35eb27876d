//! `doc.*`.

use serde::{Deserialize, Serialize};

/// `doc.create` parameters: an open document, or a closed one with these writers (peer
/// ids) besides its creator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateParams {
    pub name: String,
    pub open: bool,
    #[serde(default)]
    pub writers: Vec<String>,
}

/// Parameters naming a document by id or local alias (`doc.join` takes an id).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocParams {
    pub doc: String,
}

/// `doc.get` parameters; without a key, the whole document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetParams {
    pub doc: String,
    #[serde(default)]
    pub key: Option<String>,
}

/// `doc.set` parameters; `value` is JSON text.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetParams {
    pub doc: String,
    pub key: String,
    pub value: String,
}

/// `doc.del` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyParams {
    pub doc: String,
    pub key: String,
}

/// `doc.incr` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncrParams {
    pub doc: String,
    pub key: String,
    pub by: i64,
}

/// `doc.add` and `doc.rm` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembersParams {
    pub doc: String,
    pub key: String,
    pub members: Vec<String>,
}

/// `doc.writers` parameters; with neither list, it only reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WritersParams {
    pub doc: String,
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `doc.create` and `doc.join` result, and `doc.ls` / `doc.info` entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocInfo {
    /// The document id (base32).
    pub doc: String,
    /// The local alias.
    pub name: String,
    pub open: bool,
    /// The creator's peer id.
    pub owner: String,
    /// BLAKE3 of the canonical content, hex: equal digests, equal documents.
    pub digest: String,
    pub keys: usize,
    /// Deltas held (fewer once authors fold).
    pub deltas: usize,
    /// Connected peers known to replicate the document.
    pub replicas: usize,
    /// Sync lag of peers' writes applied here in the last ten minutes: from the write's
    /// clock to its application here. Absent when none arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<Lag>,
    /// Writes known from peers (their summaries, deltas seen) but not yet applied here.
    #[serde(default)]
    pub behind: u64,
    /// Bytes of the deltas held (the history compaction keeps short).
    #[serde(default)]
    pub log_bytes: u64,
    /// Bytes of the content itself, encoded: what no history can be shorter than.
    #[serde(default)]
    pub state_bytes: u64,
}

/// `doc.cut` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CutParams {
    pub doc: String,
    /// The cut's hybrid-clock time, ms since the Unix epoch.
    pub at_ms: u64,
}

/// `doc.cut` result: what this node holds of the document at the cut.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocCut {
    pub doc: String,
    /// This node's peer id.
    pub peer_id: String,
    pub at_ms: u64,
    /// Per author (peer id), its writes held here at the cut: 1 to this.
    pub cut: std::collections::BTreeMap<String, u64>,
    /// The same for all writes held now.
    pub held: std::collections::BTreeMap<String, u64>,
    /// Digest of the document holding exactly the cut's writes.
    pub digest: String,
    /// A fold held here spans the cut: its writes before the cut are left out.
    pub straddled: bool,
}

/// Recent sync lag, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lag {
    pub last_ms: u64,
    pub p50_ms: u64,
    pub max_ms: u64,
    /// Writes measured.
    pub samples: usize,
}

/// Result of a write: durable locally under this sequence number of ours.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Written {
    pub doc: String,
    pub seq: u64,
    /// The write's trace id: `lattice testnet logs --trace ID` follows it.
    #[serde(default)]
    pub trace: String,
}

/// `doc.writers` result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Writers {
    pub doc: String,
    pub open: bool,
    pub owner: String,
    pub writers: Vec<Writer>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Writer {
    pub peer_id: String,
    pub state: WriterState,
    /// For a removed writer, the last of its writes that counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<u64>,
}

/// Whether a writer of a closed document may still write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriterState {
    Writer,
    Removed,
}

/// A `doc.watch` event: what one applied change (a local write, a delta from a peer, or a
/// batch of them) did to the document's top-level keys; a removed key maps to null.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchEvent {
    pub doc: String,
    pub local: bool,
    /// Peer ids of the authors whose deltas were applied.
    pub authors: Vec<String>,
    pub changes: std::collections::BTreeMap<String, serde_json::Value>,
}
