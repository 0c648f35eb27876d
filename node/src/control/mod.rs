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
