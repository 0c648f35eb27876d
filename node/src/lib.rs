//! The Lattice daemon.
//!
//! - [`config`]: [`Config`], `config.toml`, where the data directory and socket live.
//! - [`identity`]: the node's Ed25519 key, created once and kept.
//! - [`lock`]: one daemon per data directory.
//! - [`control`]: the control socket — protocol, server and [`control::Client`].
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`daemon`]: [`daemon::run`], which starts everything and stops it in order.
//!
//! Documents (issue #4) and blobs and services (issue #6) are built on this next.

pub mod config;
pub mod control;
pub mod daemon;
pub mod identity;
pub mod lock;
pub mod metrics;

pub use config::Config;
