//! The control socket: how the CLI (or any program) drives a daemon.
//!
//! - [`api`]: messages, methods, stable error codes.
//! - [`codec`]: length-prefixed CBOR frames with a 16 MiB cap.
//! - [`server`]: the socket server.
//! - [`client`]: the client, [`Client`].

pub mod api;
pub mod client;
pub mod codec;
pub mod server;

pub use client::{Client, ClientError};

use api::{ApiError, ErrorCode};

/// Decodes a method's parameters; parameters that do not fit are the client's error.
pub fn params<T: serde::de::DeserializeOwned>(v: serde_cbor::Value) -> Result<T, ApiError> {
    codec::from_value(v).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

/// Encodes a method's result.
pub fn result<T: serde::Serialize>(v: &T) -> Result<serde_cbor::Value, ApiError> {
    codec::to_value(v).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// Encodes a method's result as a one-value reply.
pub fn reply<T: serde::Serialize>(v: &T) -> Result<server::Reply, ApiError> {
    result(v).map(server::Reply::Value)
}

/// A streaming reply: each item of `items`, encoded, until its senders are gone or the
/// client leaves.
pub fn stream<T: serde::Serialize + Send + 'static>(
    mut items: tokio::sync::mpsc::Receiver<T>,
) -> server::Reply {
    let (tx, rx) = tokio::sync::mpsc::channel(server::STREAM_QUEUE);
    tokio::spawn(async move {
        while let Some(item) = items.recv().await {
            let Ok(v) = codec::to_value(&item) else {
                continue;
            };
            if tx.send(v).await.is_err() {
                return;
            }
        }
    });
    server::Reply::Stream(rx)
}

pub fn unknown_method(m: &str) -> ApiError {
    ApiError::new(ErrorCode::UnknownMethod, format!("unknown method {m:?}"))
}
