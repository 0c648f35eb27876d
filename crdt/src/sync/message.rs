//! What replicas say to each other: signed deltas, version-vector summaries and batches.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::acl::AclOp;
use crate::clock::Timestamp;
use crate::codec::{self, CodecError};
use crate::doc::Delta;
use crate::id::{ActorId, DocId};
use crate::vv::VersionVector;

/// Largest sync message accepted from a peer.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Highest sequence number a delta may carry: 2^48 writes (a million a second for nine
/// years) leave room for every checked `+ 1` and sum, so no remote number overflows.
pub const MAX_SEQ: u64 = 1 << 48;

/// The sequence numbers a delta covers: one write, or an author's consecutive writes
/// folded into one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "(u64, u64)", into = "(u64, u64)")]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

impl SeqRange {
    pub fn one(seq: u64) -> Self {
        SeqRange {
            first: seq,
            last: seq,
        }
    }

    /// True if the range is well formed: starts at 1 or later, does not run backwards,
    /// and stays within [`MAX_SEQ`].
    pub fn is_valid(&self) -> bool {
        self.first >= 1 && self.first <= self.last && self.last <= MAX_SEQ
    }

    /// True if this range covers all of `other`.
    pub fn covers(&self, other: &SeqRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }
}

impl From<(u64, u64)> for SeqRange {
    fn from((first, last): (u64, u64)) -> Self {
        SeqRange { first, last }
    }
}

impl From<SeqRange> for (u64, u64) {
    fn from(r: SeqRange) -> Self {
        (r.first, r.last)
    }
}

/// A delta with its provenance: which document, who wrote it, which of the author's
/// writes it covers, the author's clock, and the author's signature over all of that.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedDelta {
    pub doc: DocId,
    pub author: ActorId,
    pub seqs: SeqRange,
    pub hlc: Timestamp,
    /// Shared, so that relaying, logging and persisting a delta never copies it.
    pub delta: Arc<Delta>,
    /// Edits of the access list; only the document's owner may carry any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl: Vec<AclOp>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl SignedDelta {
    /// The bytes the author signs: everything but the signature, canonically encoded.
    pub fn signing_bytes(&self) -> Vec<u8> {
        codec::encode(&(
            "lattice delta v1",
            &self.doc,
            &self.author,
            &self.seqs,
            &self.hlc,
            &self.delta,
            &self.acl,
        ))
    }
}

/// Signs and verifies deltas. `crdt` stays free of cryptography: the node implements this
/// with its Ed25519 key (an actor id is a public key); tests use [`TestAuth`].
pub trait Authenticator: Send + Sync {
    /// Signs `msg` as `author`, this replica's own actor.
    fn sign(&self, author: &ActorId, msg: &[u8]) -> Vec<u8>;
    /// True if `signature` is `author`'s over `msg`.
    fn verify(&self, author: &ActorId, msg: &[u8], signature: &[u8]) -> bool;
}

/// A stand-in for signatures in tests and simulations: a keyed BLAKE3 MAC whose key is
/// the actor id. It detects corruption and mistaken authorship, not forgery: anyone who
/// knows an actor id can compute it. Never use it outside tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct TestAuth;

impl Authenticator for TestAuth {
    fn sign(&self, author: &ActorId, msg: &[u8]) -> Vec<u8> {
        blake3::keyed_hash(&author.0, msg).as_bytes().to_vec()
    }

    fn verify(&self, author: &ActorId, msg: &[u8], signature: &[u8]) -> bool {
        blake3::keyed_hash(&author.0, msg).as_bytes().as_slice() == signature
    }
}

/// A message between two replicas of one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// A new delta, pushed on the fast path (gossip).
    Delta(SignedDelta),
    /// "This is what I hold": the receiver answers with deltas the sender lacks, and if
    /// `reply` is set and the sender holds deltas the receiver lacks, with its own summary.
    /// `chains` hashes each author's entries held: where the version vectors agree but a
    /// chain differs, the receiver lists its entries of that author ([`Message::Entries`]),
    /// so that two versions of the same writes (a fold, or equivocation) meet.
    Summary {
        doc: DocId,
        vv: VersionVector,
        reply: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chains: Vec<(ActorId, [u8; 16])>,
        /// The sender is catching up (it lost its store): answer with a summary even if
        /// nothing is missing on either side, so it learns that none of its own writes is.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        recovering: bool,
    },
    /// "These are my entries of `author`": sequence ranges with signature fingerprints
    /// (the newest 4,096 at most). The receiver sends the entries of its own not listed.
    Entries {
        doc: DocId,
        author: ActorId,
        entries: Vec<(SeqRange, u64)>,
    },
    /// A bounded batch of deltas the receiver lacked; `more` if the sender had more.
    Deltas {
        doc: DocId,
        deltas: Vec<SignedDelta>,
        more: bool,
    },
    /// Proof that an author equivocated: two deltas it signed that give different versions
    /// of the same writes. Every replica that checks it cuts the author before them.
    Evidence {
        doc: DocId,
        deltas: Vec<SignedDelta>,
    },
}

impl Message {
    /// The deltas the message carries, if any.
    pub fn deltas(&self) -> &[SignedDelta] {
        match self {
            Message::Delta(d) => std::slice::from_ref(d),
            Message::Deltas { deltas, .. } | Message::Evidence { deltas, .. } => deltas,
            Message::Summary { .. } | Message::Entries { .. } => &[],
        }
    }

    pub fn doc(&self) -> DocId {
        match self {
            Message::Delta(d) => d.doc,
            Message::Summary { doc, .. }
            | Message::Entries { doc, .. }
            | Message::Deltas { doc, .. }
            | Message::Evidence { doc, .. } => *doc,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a message from a peer, refusing more than [`MAX_MESSAGE_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode(bytes, MAX_MESSAGE_BYTES)
    }
}
