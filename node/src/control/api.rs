//! The control protocol's messages, methods and error codes. `docs/control-protocol.md`
//! describes the same thing for clients in other languages; keep them in step.

use serde::{Deserialize, Serialize};

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

    pub fn err(id: u64, error: ApiError) -> Self {
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
    /// The operation took too long.
    Timeout,
    /// Too much is in flight; retry later.
    Busy,
    /// A network operation failed (dial refused, peer unreachable, ...).
    NetworkError,
    /// The daemon is shutting down.
    Unavailable,
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
pub type Peer = lattice_overlay::PeerInfo;

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
