//! What replicas of a document say to each other over `/lattice/sync/1`: a replication
//! message, or a request for a document's genesis (to join it); and what two peers say
//! over `/lattice/digest/1` to find which of their shared documents differ. CBOR through
//! the crdt codec, bounded on decode.

use lattice_crdt::sync::{Genesis, Message, MAX_MESSAGE_BYTES};
use lattice_crdt::{codec, DocId};
use serde::{Deserialize, Serialize};

/// A request on `/lattice/sync/1`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncRequest {
    /// A replication message for the replica of `msg.doc()`.
    Sync(Message),
    /// "Tell me what document this id names" — answered with its genesis.
    Genesis(DocId),
}

/// The answer to a [`SyncRequest`]. Replication replies travel as requests of their own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncResponse {
    Ok,
    Genesis(Genesis),
    /// Refused, with the reason.
    Refused(String),
}

impl SyncRequest {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(bytes, MAX_MESSAGE_BYTES)
    }
}

impl SyncResponse {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(bytes, 64 << 10)
    }
}

/// A request on `/lattice/digest/1`, about the documents both peers replicate (each side
/// counts the documents whose replica lists the other as a peer).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestRequest {
    /// The requester's digest of all of them ([`super::digests::total`]).
    Total(#[serde(with = "serde_bytes")] [u8; 16]),
    /// Each document's digest, for the documents in these buckets (indices below
    /// [`super::digests::BUCKETS`]).
    Docs(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// The answer to a [`DigestRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestResponse {
    /// The totals agree: nothing to exchange.
    Same,
    /// The responder's digest of each bucket, [`super::digests::BUCKETS`] of 8 bytes.
    Buckets(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Document id and digest (40 bytes each), in the buckets asked for.
    Docs(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Refused, with the reason.
    Refused(String),
}

/// Largest digest request and response decoded: a response lists at most
/// [`super::digests::MAX_LISTED`] documents.
const MAX_DIGEST_REQUEST: usize = 1 << 10;
const MAX_DIGEST_RESPONSE: usize = 4 << 20;

impl DigestRequest {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(bytes, MAX_DIGEST_REQUEST)
    }
}

impl DigestResponse {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(bytes, MAX_DIGEST_RESPONSE)
    }
}

/// The gossipsub topic of a document.
pub fn topic(doc: &DocId) -> String {
    format!("/lattice/doc/{doc}")
}
