//! `blob.*`.

use serde::{Deserialize, Serialize};

/// `blob.add` parameters: an absolute path the daemon can read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddParams {
    pub path: String,
}

/// Parameters naming a blob by hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HashParams {
    pub hash: String,
}

/// `blob.get` parameters: copy the blob to `out` (absolute) once complete.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchParams {
    pub hash: String,
    #[serde(default)]
    pub out: Option<String>,
}

/// A *blob info*: `blob.add`, `blob.rm`, `blob.pin` and `blob.unpin` results, `blob.ls`
/// entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// BLAKE3 of the content, hex.
    pub hash: String,
    /// The same as a CIDv1 (raw, BLAKE3 multihash; `bafkr4…`), as other libp2p tools name it.
    #[serde(default)]
    pub cid: String,
    pub size: u64,
    pub complete: bool,
    pub pinned: bool,
    pub local: bool,
    /// Verified bytes (the size once complete).
    pub have: u64,
}

/// `blob.get` events: progress as it goes, then one `done` or `failed`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchEvent {
    /// Verified bytes so far, of `size`; `providers` are in use.
    Progress {
        have: u64,
        size: u64,
        providers: usize,
    },
    /// The blob is complete (and copied to `path` if one was asked for).
    Done {
        blob: BlobInfo,
        path: Option<String>,
        /// Bytes received from providers in this fetch, and pieces fetched again after a
        /// provider failed or lied.
        received: u64,
        retried: u64,
        /// Peer ids of providers that sent bytes that did not verify.
        bad_providers: Vec<String>,
        /// The fetch's trace id: `lattice testnet logs --trace ID` follows it.
        #[serde(default)]
        trace: String,
    },
    Failed {
        message: String,
        #[serde(default)]
        trace: String,
    },
}

/// `blob.providers` result entries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub peer_id: String,
}
