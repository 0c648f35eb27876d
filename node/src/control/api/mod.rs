//! The control protocol's messages, methods and error codes. `docs/control-protocol.md`
//! describes the same thing for clients in other languages; keep them in step.

use serde::{Deserialize, Serialize};

pub use super::methods::{Family, Method, METHODS};

/// Bumped when a change would break existing clients.
pub const PROTOCOL_VERSION: u32 = 1;

/// The first frame each way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    /// Free text naming the program, e.g. `lattice/0.1.0`.
    pub agent: String,
}

/// A call. `params` is a map (or absent) whose shape depends on `method`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub method: String,
    #[serde(default = "null")]
    pub params: serde_cbor::Value,
}

fn null() -> serde_cbor::Value {
    serde_cbor::Value::Null
}

/// An answer, echoing the request's id. Exactly one of `result`, `error`, `event` is
/// set, or `end` is true. Streaming methods send `event`s, then `end`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Response {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_cbor::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_cbor::Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
}

impl Response {
    pub fn ok(id: u64, result: serde_cbor::Value) -> Self {
        Response {
            id,
            result: Some(result),
            ..Default::default()
        }
    }

    /// An error answer; a long message is cut (see [`super::shorten`]).
    pub fn err(id: u64, mut error: ApiError) -> Self {
        super::shorten(&mut error.message);
        Response {
            id,
            error: Some(error),
            ..Default::default()
        }
    }
}

/// Stable error codes: clients match on these, never on messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid CBOR of the expected shape; the connection is closed.
    MalformedFrame,
    /// The frame's length exceeded the maximum; the connection is closed.
    FrameTooLarge,
    /// The client's protocol version is not supported; the connection is closed.
    UnsupportedVersion,
    UnknownMethod,
    /// The parameters do not fit the method.
    BadRequest,
    NotFound,
    /// The document is closed and this node is not one of its writers.
    NotAWriter,
    /// The operation took too long.
    Timeout,
    /// Too much is in flight; retry later.
    Busy,
    /// A network operation failed (dial refused, peer unreachable, ...).
    NetworkError,
    /// The daemon is shutting down.
    Unavailable,
    /// The answer would exceed the 16 MiB frame limit; ask for less. The connection
    /// stays open.
    ResultTooLarge,
    /// The connection sat idle too long and is being closed.
    Idle,
    /// The node's disk failed (full, or an I/O error): the message says which, and
    /// whether the write is surely not stored or may be.
    Storage,
    Internal,
}

/// An error answer: a stable code, and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// The last event of a stream whose reader fell behind (`doc.watch`, `topic.subscribe`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaggedEvent {
    pub lagged: Lagged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lagged {
    /// Items dropped, exactly: every one after the last delivered.
    pub dropped: u64,
    pub message: String,
}

/// Method names.
pub mod method {
    pub const ID: &str = "id";
    pub const STATUS: &str = "status";
    pub const PEERS: &str = "peers";
    pub const DIAL: &str = "dial";
    pub const NET_BLOCK: &str = "net.block";
    pub const NET_UNBLOCK: &str = "net.unblock";
    pub const NET_ALLOW_ONLY: &str = "net.allow_only";
    pub const NET_ALLOW_ALL: &str = "net.allow_all";
    pub const DOC_CREATE: &str = "doc.create";
    pub const DOC_JOIN: &str = "doc.join";
    pub const DOC_LS: &str = "doc.ls";
    pub const DOC_INFO: &str = "doc.info";
    pub const DOC_GET: &str = "doc.get";
    pub const DOC_SET: &str = "doc.set";
    pub const DOC_DEL: &str = "doc.del";
    pub const DOC_INCR: &str = "doc.incr";
    pub const DOC_ADD: &str = "doc.add";
    pub const DOC_RM: &str = "doc.rm";
    /// Streaming: one event per change, until the client closes or sends anything.
    pub const DOC_WATCH: &str = "doc.watch";
    pub const DOC_WRITERS: &str = "doc.writers";
    pub const BLOB_ADD: &str = "blob.add";
    /// Streaming: progress events, then `done` or `failed`.
    pub const BLOB_GET: &str = "blob.get";
    pub const BLOB_LS: &str = "blob.ls";
    pub const BLOB_RM: &str = "blob.rm";
    pub const BLOB_PIN: &str = "blob.pin";
    pub const BLOB_UNPIN: &str = "blob.unpin";
    pub const BLOB_PROVIDERS: &str = "blob.providers";
    pub const SERVICE_ADVERTISE: &str = "service.advertise";
    pub const SERVICE_WITHDRAW: &str = "service.withdraw";
    pub const SERVICE_FIND: &str = "service.find";
    pub const SERVICE_LS: &str = "service.ls";
    pub const TOPIC_PUBLISH: &str = "topic.publish";
    /// Streaming: one event per message, until the client closes.
    pub const TOPIC_SUBSCRIBE: &str = "topic.subscribe";
    /// Connected peers known to subscribe to a topic.
    pub const TOPIC_PEERS: &str = "topic.peers";
}

/// `id` result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdInfo {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
}

/// `status` result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub peer_id: String,
    pub version: String,
    /// Connected peers.
    pub peers: usize,
    /// Peers in the Kademlia routing table.
    pub dht_peers: usize,
    pub docs: usize,
    pub blobs: usize,
    pub uptime_s: u64,
    pub listen_addrs: Vec<String>,
    pub external_addrs: Vec<String>,
    pub data_dir: String,
    pub blocked: Vec<String>,
    pub allow_only: Option<Vec<String>>,
}

/// `peers` result entries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Peer {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// Last ping round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    pub connected: bool,
    /// In this node's Kademlia routing table.
    pub in_dht: bool,
}

impl From<&lattice_overlay::PeerInfo> for Peer {
    fn from(p: &lattice_overlay::PeerInfo) -> Self {
        Peer {
            peer_id: p.peer.to_string(),
            addrs: super::strings(&p.addrs),
            rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1e3),
            connected: p.connected,
            in_dht: p.in_dht,
        }
    }
}

/// `dial` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DialParams {
    pub addr: String,
}

/// `dial` result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dialed {
    pub peer_id: String,
}

/// `net.block`, `net.unblock` and `net.allow_only` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeersParams {
    pub peers: Vec<String>,
}

/// Results with nothing to say.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Done {}

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
}

/// Result of a write: durable locally under this sequence number of ours.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Written {
    pub doc: String,
    pub seq: u64,
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
    /// `writer`, or `removed` (then `cut` is the last of its writes that counts).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<u64>,
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
