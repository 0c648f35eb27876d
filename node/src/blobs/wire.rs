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
/// Largest blob accepted (1 TiB): a provider claiming more is lying, and its size would
/// otherwise become the length of the files a fetch creates.
pub const MAX_BLOB_BYTES: u64 = 1 << 40;
/// Most chunks one request may ask for.
pub const MAX_REQUEST_CHUNKS: u64 = 8 * 1024;
/// Most ranges in one request.
pub const MAX_REQUEST_RANGES: usize = 64;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobRequest {
    /// The blob's size (unverified until a range ending at the last chunk verifies).
    Size {
        #[serde(with = "serde_bytes")]
        hash: [u8; 32],
        /// The fetch's trace id ([`crate::trace`]), logged by the provider; older nodes
        /// ignore it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<u64>,
    },
    /// Chunk ranges `[start, end)` in 1 KiB chunks, encoded with their proof.
    Ranges {
        #[serde(with = "serde_bytes")]
        hash: [u8; 32],
        ranges: Vec<(u64, u64)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<u64>,
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

    /// An empty frame with room for `bytes` of encoding: a piece is encoded without the
    /// buffer doubling (and copying) on the way, into a kept buffer when there is one (see
    /// [`lattice_overlay::buffers`]; the codec keeps it again once it is sent).
    pub fn with_capacity(bytes: usize) -> Self {
        let want = bytes.saturating_add(1);
        let mut v = lattice_overlay::buffers::take(want).unwrap_or_default();
        v.clear();
        v.reserve_exact(want);
        v.push(RAW);
        Framed(v)
    }

    /// Hands the frame's buffer back for reuse by the next bulk answer.
    pub fn recycle(self) {
        lattice_overlay::buffers::give(self.0)
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

impl BlobResponse {
    /// A short description for errors and logs: never the payload, and at most 200
    /// characters of a provider's reason.
    pub fn describe(&self) -> String {
        match self {
            BlobResponse::Size(n) => format!("a size ({n} bytes)"),
            BlobResponse::Encoded(f) => format!("encoded ranges ({} bytes)", f.payload().len()),
            BlobResponse::NotFound => "not found".to_owned(),
            BlobResponse::Refused(why) => {
                let why: String = why.chars().take(200).collect();
                format!("refused: {why:?}")
            }
        }
    }
}

/// An upper bound on the encoded size of `chunks` chunks with their proof: the data, one
/// 64-byte pair of hashes per 64 KiB chunk group, a tree's height of pairs per range, the
/// frame tag.
pub fn encoded_bound(chunks: u64) -> usize {
    let data = chunks.saturating_mul(1024);
    let proof = (chunks / 64 + 1 + MAX_REQUEST_RANGES as u64 * 64).saturating_mul(64);
    usize::try_from(data.saturating_add(proof).saturating_add(1)).unwrap_or(usize::MAX)
}

/// Checks the ranges of a request for a blob of `chunks` chunks: at most
/// [`MAX_REQUEST_RANGES`] non-empty ranges inside the blob, at most [`MAX_REQUEST_CHUNKS`]
/// chunks in all, counted without overflow. The answer is built in memory, so this is what
/// bounds it. Returns the number of chunks asked for.
pub fn check_ranges(ranges: &[(u64, u64)], chunks: u64) -> Result<u64, String> {
    let bad = || {
        format!(
            "ask for at most {MAX_REQUEST_CHUNKS} chunks of the blob's {chunks}, \
             in at most {MAX_REQUEST_RANGES} non-empty ranges"
        )
    };
    if ranges.is_empty() || ranges.len() > MAX_REQUEST_RANGES {
        return Err(bad());
    }
    let mut total = 0u64;
    for &(s, e) in ranges {
        if s >= e || e > chunks {
            return Err(bad());
        }
        total = total.checked_add(e - s).ok_or_else(bad)?;
    }
    if total > MAX_REQUEST_CHUNKS {
        return Err(bad());
    }
    Ok(total)
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
    fn range_requests_are_bounded_without_overflow() {
        let chunks = 1 << 20;
        assert!(check_ranges(&[(0, 4096), (8192, 12288)], chunks).is_ok());
        // Two ranges near 2^63 whose lengths wrap to 0 when summed.
        let huge = [(0, 1 << 63), (0, 1 << 63)];
        assert!(check_ranges(&huge, u64::MAX).is_err());
        // Past the end of the blob, empty, backwards, too many, too much.
        assert!(check_ranges(&[(0, chunks + 1)], chunks).is_err());
        assert!(check_ranges(&[(5, 5)], chunks).is_err());
        assert!(check_ranges(&[(6, 5)], chunks).is_err());
        assert!(check_ranges(&[], chunks).is_err());
        assert!(check_ranges(&[(0, 1); MAX_REQUEST_RANGES + 1], chunks).is_err());
        assert!(check_ranges(&[(0, MAX_REQUEST_CHUNKS + 1)], chunks).is_err());
    }

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
