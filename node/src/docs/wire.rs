//! What replicas of a document say to each other over `/lattice/sync/1`: a replication
//! message, or a request for a document's genesis (to join it). CBOR through the crdt
//! codec, bounded on decode.

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

/// The gossipsub topic of a document.
pub fn topic(doc: &DocId) -> String {
    format!("/lattice/doc/{doc}")
}
