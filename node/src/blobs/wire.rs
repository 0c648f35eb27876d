//! `/lattice/blob/1`: ask a provider for a blob's size, or for chunk ranges of it encoded
//! with the BLAKE3 tree nodes that prove them (bao-tree's encoding). CBOR through the
//! crdt codec; ranges bounded so one response stays well inside the overlay's limit.

use lattice_crdt::codec;
use serde::{Deserialize, Serialize};

/// Largest request accepted.
const MAX_REQUEST: usize = 64 << 10;
/// Largest response accepted: a piece of data plus its proof and framing.
pub const MAX_RESPONSE: usize = 12 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobRequest {
    /// The blob's size (unverified until a range ending at the last chunk verifies).
    Size {
        #[serde(with = "serde_bytes")]
        hash: [u8; 32],
    },
    /// Chunk ranges `[start, end)` in 1 KiB chunks, encoded with their proof.
    Ranges {
        #[serde(with = "serde_bytes")]
        hash: [u8; 32],
        ranges: Vec<(u64, u64)>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobResponse {
    Size(u64),
    /// bao-tree's encoding of the requested ranges.
    Encoded(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The provider does not hold (those ranges of) the blob.
    NotFound,
    /// Refused, with the reason (busy, malformed, too large).
    Refused(String),
}

impl BlobRequest {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(b: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(b, MAX_REQUEST)
    }
}

impl BlobResponse {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(b: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(b, MAX_RESPONSE)
    }
}
