//! The control protocol on the wire: frames, error codes, and each method's parameters,
//! results and events, one file per family. `docs/control-protocol.md` describes the same
//! for clients in other languages (a test keeps its method list in step with
//! [`METHODS`]). Domain modules never build these types: `control/convert.rs` does.

use serde::{Deserialize, Serialize};

mod blob;
mod doc;
mod net;
mod service;
mod topic;

pub use super::methods::{method, Call, Command, Family, Method, COMMON_ERRORS, METHODS};
pub use blob::*;
pub use doc::*;
pub use net::*;
pub use service::*;
pub use topic::*;

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

/// Results with nothing to say.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Done {}

/// The parameters of a method that takes none: encoded as null, and anything a client
/// sends is accepted and ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoParams;

impl Serialize for NoParams {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for NoParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NoParams)
    }
}
