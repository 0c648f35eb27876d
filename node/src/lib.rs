//! The Lattice daemon.
//!
//! - [`config`]: [`Config`], `config.toml`, where the data directory and socket live.
//! - [`identity`]: the node's Ed25519 key, created once and kept.
//! - [`lock`]: one daemon per data directory.
//! - [`accept`]: accept loops that back off when out of file descriptors.
//! - [`control`]: the control socket — protocol, server and [`control::Client`].
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`daemon`]: [`daemon::run`], which starts everything and stops it in order.
//! - [`auth`]: signing and verifying deltas with nodes' Ed25519 keys.
//! - [`store`]: durable storage (redb) on its own thread.
//! - [`blobs`]: content-addressed files, verified range by range, from many providers.
//! - [`services`]: advertising and finding named capabilities.
//! - [`topics`]: publish/subscribe message streams over gossipsub.
//! - [`subs`]: which peers subscribe to which gossip topics (bounded, both ways).
//! - [`docs`]: replicated documents, driving the crdt sync state machine over the overlay.
//! - [`ports`]: the listen port, picked once and kept in the data directory.
//! - [`peer_store`]: peers met, kept so that a restarted node rejoins on its own.
//! - [`fuzz`]: fuzz targets for every decoder of untrusted bytes in the daemon.

pub mod accept;
pub mod activity;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dht_keys;
pub mod docs;
pub mod fuzz;
pub mod http;
pub mod identity;
pub mod lock;
pub mod lossy;
pub mod metrics;
pub mod peer_store;
pub mod ports;
pub mod services;
pub mod store;
pub mod subs;
pub mod topics;
pub mod trace;
#[cfg(test)]
mod wire_vectors;

pub use config::Config;

/// Milliseconds since the Unix epoch (0 on a clock set before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Locks a mutex, taking over its data if another holder panicked: every mutex here
/// guards plain maps and sets that a panic cannot leave half-written.
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
