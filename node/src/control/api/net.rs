//! `id`, `status`, `peers`, `dial` and `net.*`.

use serde::{Deserialize, Serialize};

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
    /// The connection manager's target: past `high` connected peers, idle ones are
    /// disconnected down to `low`.
    #[serde(default)]
    pub connection_target: Option<ConnectionTarget>,
    /// Idle peers the connection manager disconnected since start.
    #[serde(default)]
    pub trimmed_peers: u64,
    pub docs: usize,
    pub blobs: usize,
    pub uptime_s: u64,
    pub listen_addrs: Vec<String>,
    pub external_addrs: Vec<String>,
    pub data_dir: String,
    pub blocked: Vec<String>,
    pub allow_only: Option<Vec<String>>,
    /// `public`, `private` or `unknown`: whether peers can dial this node, as AutoNAT
    /// found (or `--reachability` says).
    #[serde(default)]
    pub reachability: String,
    /// The address peers reached this node at, when public and known.
    #[serde(default)]
    pub reachable_at: Option<String>,
    /// This node serves as a relay for unreachable peers.
    #[serde(default)]
    pub relay_service: bool,
    /// `/p2p-circuit` addresses reserved on relays, at which this node can be dialled.
    #[serde(default)]
    pub relayed_addrs: Vec<String>,
    /// What UPnP last said, if it ran.
    #[serde(default)]
    pub upnp: Option<String>,
    /// How a NAT on the way maps this node's port, per transport (`tcp`, `udp`).
    #[serde(default)]
    pub nat_mapping: Vec<NatMapping>,
    /// Fresh writes' clocks (HLC) against this node's, per author, largest first; only
    /// writes that arrived by gossip in the last 10 minutes.
    #[serde(default)]
    pub clock_offsets: Vec<ClockOffset>,
    /// The status page's URL, with the token it requires, when `--http` serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_page: Option<String>,
}

/// `status`: how many peers the connection manager keeps connected.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ConnectionTarget {
    pub low: usize,
    pub high: usize,
}

/// How a NAT maps this node's port on one transport, from the addresses peers saw its
/// connections come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NatMapping {
    /// `tcp` or `udp` (QUIC).
    pub transport: String,
    /// `unknown` (fewer than two peers told), `none` (peers see the listening address),
    /// `endpoint-independent` (one address for every peer: hole punching works) or
    /// `symmetric` (a port per peer: only relays connect).
    pub behaviour: String,
    /// The NAT kept the listening port (endpoint-independent only).
    #[serde(default)]
    pub port_preserving: bool,
    /// Peers whose reports this is built on.
    pub observers: usize,
    /// The distinct `IP:PORT`s they saw.
    pub seen: Vec<String>,
}

/// The clock of one author's latest fresh write against this node's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClockOffset {
    /// The author's peer id.
    pub peer_id: String,
    /// Positive when the write's clock was ahead of this node's.
    pub offset_ms: i64,
    /// Seconds since it arrived.
    pub age_s: u64,
    /// The write was refused for being too far ahead.
    pub refused: bool,
}

/// `peers` result entries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Peer {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// Last ping round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    pub connected: bool,
    /// Connected only through a relay so far (no direct connection).
    #[serde(default)]
    pub relayed: bool,
    /// In this node's Kademlia routing table.
    pub in_dht: bool,
    /// Its circuit breaker: `closed` (requests go), `open` (they fail at once: its recent
    /// requests kept failing) or `half-open` (one probe request in flight).
    #[serde(default)]
    pub breaker: String,
    /// While open: seconds until a probe may go.
    #[serde(default)]
    pub breaker_retry_s: Option<f64>,
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
