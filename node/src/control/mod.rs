//! The control socket: how the CLI (or any program) drives a daemon.
//!
//! - [`methods`]: the method table; every method once, with its types and error codes.
//! - [`api`]: the wire types: frames, stable error codes, each method's params and results.
//! - [`codec`]: length-prefixed CBOR frames with a 16 MiB cap.
//! - [`server`]: the socket server: connection limits, timeouts, streams.
//! - `handle`: where each method is answered, one file per family.
//! - `convert` and [`errors`]: domain answers and errors into wire types and codes.
//! - [`client`]: the typed client, [`Client`].

pub mod api;
pub mod client;
pub mod codec;
mod convert;
pub mod errors;
pub(crate) mod handle;
pub mod methods;
pub mod server;

pub use client::{Client, ClientError};

use api::{ApiError, ErrorCode};

/// Longest peer id a parameter may hold: Ed25519 ids are 52 characters, RSA ones 46.
/// Checked before decoding, which is quadratic in the length.
pub const MAX_PEER_ID: usize = 128;
/// Most peer ids one parameter list may hold (`net.*`, `doc.writers`, `doc.create`).
pub const MAX_PEER_LIST: usize = 1_000;
/// Longest multiaddr a parameter may hold.
pub const MAX_ADDR: usize = 1_024;
/// Longest text or byte string of any parameter: the largest is a `doc.set` value, which
/// cannot exceed the 1 MiB write limit anyway.
pub const MAX_PARAM: usize = 1 << 20;
/// Longest error message sent: an error never echoes megabytes of its input.
pub const MAX_MESSAGE: usize = 1_024;

/// Refuses parameters with a string longer than [`MAX_PARAM`], before any method looks
/// at them.
pub fn check_params(v: &serde_cbor::Value) -> Result<(), ApiError> {
    use serde_cbor::Value as V;
    let too_long = |n: usize| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("a parameter of {n} bytes exceeds the {MAX_PARAM}-byte limit"),
        )
    };
    match v {
        V::Text(t) if t.len() > MAX_PARAM => Err(too_long(t.len())),
        V::Bytes(b) if b.len() > MAX_PARAM => Err(too_long(b.len())),
        V::Array(items) => items.iter().try_for_each(check_params),
        V::Map(m) => m
            .iter()
            .try_for_each(|(k, v)| check_params(k).and_then(|()| check_params(v))),
        V::Tag(_, inner) => check_params(inner),
        _ => Ok(()),
    }
}

/// Cuts a message to [`MAX_MESSAGE`] bytes (at a character boundary), saying how long
/// it was.
pub fn shorten(message: &mut String) {
    if message.len() <= MAX_MESSAGE {
        return;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let total = message.len();
    message.truncate(end);
    message.push_str(&format!("… ({total} bytes in all)"));
}

/// Refuses a list of peer ids longer than [`MAX_PEER_LIST`], before any is decoded.
pub fn check_peer_list(list: &[String]) -> Result<(), ApiError> {
    if list.len() > MAX_PEER_LIST {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{} peer ids given; at most {MAX_PEER_LIST} are accepted at once",
                list.len()
            ),
        ));
    }
    Ok(())
}

/// Parses a peer id given as a parameter, refusing one too long to be real before
/// decoding it (base58 decoding takes time quadratic in the length).
pub fn parse_peer_id(s: &str) -> Result<lattice_overlay::PeerId, String> {
    if s.len() > MAX_PEER_ID {
        return Err(format!(
            "invalid peer id: {} characters, a peer id has at most {MAX_PEER_ID}",
            s.len()
        ));
    }
    s.parse().map_err(|e| format!("invalid peer id {s:?}: {e}"))
}

/// Ids and addresses as the control API shows them: as text.
pub fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// Decodes a method's parameters; parameters that do not fit are the client's error.
pub fn params<T: serde::de::DeserializeOwned>(v: serde_cbor::Value) -> Result<T, ApiError> {
    codec::from_value(v).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

/// Encodes a method's result as a one-value reply.
pub fn reply<T: serde::Serialize>(v: &T) -> Result<server::Answer, ApiError> {
    codec::to_value(v)
        .map(server::Answer::Value)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// A streaming reply: each item of `items`, as wire type `W`, until its senders are gone
/// or the client leaves.
pub fn stream<T, W>(mut items: tokio::sync::mpsc::Receiver<T>) -> server::Answer
where
    T: Into<W> + Send + 'static,
    W: serde::Serialize,
{
    let (tx, rx) = tokio::sync::mpsc::channel(server::STREAM_QUEUE);
    tokio::spawn(async move {
        while let Some(item) = items.recv().await {
            let Ok(v) = codec::to_value::<W>(&item.into()) else {
                continue;
            };
            if tx.send(v).await.is_err() {
                return;
            }
        }
    });
    server::Answer::Stream(rx)
}

/// A streaming reply from a queue that may drop for a slow reader: each item, encoded;
/// after a lag, one `{ "lagged": { "dropped", "message" } }` event, then the end.
pub fn stream_lossy<T, W>(
    mut items: crate::lossy::Receiver<T>,
    what: &'static str,
) -> server::Answer
where
    T: Into<W> + Send + 'static,
    W: serde::Serialize,
{
    let (tx, rx) = tokio::sync::mpsc::channel(server::STREAM_QUEUE);
    tokio::spawn(async move {
        while let Some(item) = items.recv().await {
            let v = match item {
                crate::lossy::Item::Item(item) => match codec::to_value::<W>(&item.into()) {
                    Ok(v) => v,
                    Err(_) => continue,
                },
                crate::lossy::Item::Lagged(dropped) => {
                    let lagged = api::Lagged {
                        dropped,
                        message: format!(
                            "this reader fell behind and {dropped} {what} were dropped; \
                             read the current state again and start a new stream"
                        ),
                    };
                    match codec::to_value(&api::LaggedEvent { lagged }) {
                        Ok(v) => v,
                        Err(_) => break,
                    }
                }
            };
            if tx.send(v).await.is_err() {
                return;
            }
        }
    });
    server::Answer::Stream(rx)
}

pub fn unknown_method(m: &str) -> ApiError {
    ApiError::new(ErrorCode::UnknownMethod, format!("unknown method {m:?}"))
}
