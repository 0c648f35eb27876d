//! `/lattice/blob/1`: ask a provider for a blob's size, or for chunk ranges of it encoded
//! with the BLAKE3 tree nodes that prove them (bao-tree's encoding). Requests and small
//! answers are CBOR through the crdt codec; encoded ranges travel as one tag byte
//! ([`RAW`], which no CBOR answer starts with) and the bytes, so megabytes of data are
//! never copied through CBOR. Ranges are bounded so a response stays inside the limit.

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

/// First byte of a response carrying encoded ranges. CBOR answers start with a map or a
/// text string header (0xa0–0xbf, 0x60–0x7f), never this.
pub const RAW: u8 = 0xee;

/// Encoded ranges in their frame: [`RAW`], then bao-tree's encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framed(Vec<u8>);

impl Framed {
    /// An empty frame to encode into.
    pub fn new() -> Self {
        Framed(vec![RAW])
    }

    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    pub fn payload(&self) -> &[u8] {
        &self.0[1..]
    }

    /// Bytes received, frame included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() <= 1
    }
}

impl Default for Framed {
    fn default() -> Self {
        Framed::new()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobResponse {
    Size(u64),
    /// bao-tree's encoding of the requested ranges (never CBOR: see [`RAW`]).
    #[serde(skip)]
    Encoded(Framed),
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
    pub fn encode(self) -> Vec<u8> {
        match self {
            BlobResponse::Encoded(f) => f.0,
            other => codec::encode(&other),
        }
    }

    pub fn decode(b: Vec<u8>) -> Result<Self, codec::CodecError> {
        if b.first() == Some(&RAW) {
            if b.len() > MAX_RESPONSE {
                return Err(codec::CodecError::TooLarge {
                    len: b.len(),
                    max: MAX_RESPONSE,
                });
            }
            return Ok(BlobResponse::Encoded(Framed(b)));
        }
        codec::decode(&b, MAX_RESPONSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_ranges_skip_cbor_and_other_answers_do_not_collide_with_the_tag() {
        let mut f = Framed::new();
        f.buffer().extend_from_slice(b"data");
        let back = BlobResponse::decode(BlobResponse::Encoded(f).encode()).unwrap();
        assert!(matches!(back, BlobResponse::Encoded(ref f) if f.payload() == b"data"));
        for r in [
            BlobResponse::Size(0xee),
            BlobResponse::NotFound,
            BlobResponse::Refused("x".into()),
        ] {
            let bytes = r.encode();
            assert_ne!(bytes[0], RAW);
            assert!(!matches!(
                BlobResponse::decode(bytes).unwrap(),
                BlobResponse::Encoded(_)
            ));
        }
    }
}
