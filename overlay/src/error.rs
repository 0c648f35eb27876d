//! Errors of the overlay handle.

use std::time::Duration;

/// An operation the overlay could not carry out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the overlay has shut down")]
    Shutdown,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("too many operations in flight ({0}); try again")]
    Busy(usize),
    #[error("dial failed: {0}")]
    Dial(String),
    #[error("peer {0} is blocked by the allow/block list")]
    Blocked(libp2p::PeerId),
    /// A request past a documented limit.
    #[error("{0}")]
    Limit(String),
    #[error("invalid multiaddr {addr:?}: {reason}")]
    BadAddr { addr: String, reason: String },
    #[error("request failed: {0}")]
    Request(String),
    /// The peer's circuit breaker is open: its recent requests kept failing.
    #[error("peer {0} keeps failing; not asked again for {1:?} (circuit breaker open)")]
    Unavailable(libp2p::PeerId, Duration),
    #[error("gossip: {0}")]
    Gossip(String),
    #[error("DHT: {0}")]
    Dht(String),
    #[error("transport setup failed: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}
