//! Overlay configuration.

use std::str::FromStr;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use libp2p::{Multiaddr, PeerId};

/// Known peers dialled at start; the rest of the network is found through them.
pub const REJOIN_DIALS: usize = 8;

/// How this node takes part in the Kademlia DHT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DhtMode {
    /// Answer DHT queries (the default: a DHT of clients answers nobody).
    #[default]
    Server,
    /// Only ask; for nodes that cannot be reached.
    Client,
    /// libp2p's automatic mode: a client until an external address is confirmed.
    Auto,
}

impl FromStr for DhtMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "server" => Ok(DhtMode::Server),
            "client" => Ok(DhtMode::Client),
            "auto" => Ok(DhtMode::Auto),
            other => Err(format!(
                "unknown DHT mode {other:?}: expected server, client or auto"
            )),
        }
    }
}

impl std::fmt::Display for DhtMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DhtMode::Server => "server",
            DhtMode::Client => "client",
            DhtMode::Auto => "auto",
        })
    }
}

/// Whether this node can be reached from the network, as it acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reachability {
    /// As AutoNAT finds: peers are asked to dial back.
    #[default]
    Auto,
    /// Reachable: serve as a relay, reserve none.
    Public,
    /// Behind a NAT or firewall: reserve relay slots at once, serve none.
    Private,
}

impl FromStr for Reachability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Reachability::Auto),
            "public" => Ok(Reachability::Public),
            "private" => Ok(Reachability::Private),
            other => Err(format!(
                "unknown reachability {other:?}: expected auto, public or private"
            )),
        }
    }
}

/// What this node gives as a circuit relay (v2) to peers that cannot be reached: every
/// cap is enforced by libp2p's relay, per reservation and per circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Peers holding a reservation at once, and reservations per peer.
    pub max_reservations: usize,
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts; clients renew it before then.
    pub reservation_duration: Duration,
    /// Relayed connections at once, and per peer.
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    /// How long one relayed connection may last, and how many bytes it may carry each
    /// way; then it is closed and opened again when needed.
    pub max_circuit_duration: Duration,
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 16,
            max_circuits_per_peer: 4,
            // Long and large enough for document sync and small requests until DCUtR
            // finds a direct path (libp2p's own default is 2 minutes and 128 KiB).
            max_circuit_duration: Duration::from_secs(600),
            max_circuit_bytes: 64 << 20,
        }
    }
}

/// How many peers the connection manager keeps connected: past `high`, the least recently
/// active peers it may close go until `low` are left (see `event_loop/trim.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionTarget {
    pub low: usize,
    pub high: usize,
    /// A peer connected or active (a request or a gossip message either way) less than
    /// this long ago is not trimmed.
    pub idle: Duration,
}

/// The default [`ConnectionTarget::idle`].
pub const TRIM_IDLE: Duration = Duration::from_secs(30);

impl Default for ConnectionTarget {
    fn default() -> Self {
        ConnectionTarget {
            low: 32,
            high: 64,
            idle: TRIM_IDLE,
        }
    }
}

impl ConnectionTarget {
    /// `low..=high`, checked: `low <= high`, and `high` at least 1.
    pub fn new(low: usize, high: usize) -> Result<Self, String> {
        if high == 0 || low > high {
            return Err(format!(
                "connection target low {low}, high {high}: need 1 <= high and low <= high"
            ));
        }
        Ok(ConnectionTarget {
            low,
            high,
            idle: TRIM_IDLE,
        })
    }
}

/// Everything the overlay needs to start.
#[derive(Clone)]
pub struct Config {
    pub keypair: Keypair,
    /// Addresses to listen on; the default is every interface, a random port, TCP and QUIC.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through. An address may end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Peers met in earlier runs with their addresses, most recently seen first: all join
    /// the routing table and the first [`REJOIN_DIALS`] are dialled, so a restarted node
    /// finds the network again without bootstrap addresses.
    pub known_peers: Vec<(PeerId, Vec<Multiaddr>)>,
    pub mdns: bool,
    /// UPnP port mapping on the local gateway.
    pub upnp: bool,
    pub dht_mode: DhtMode,
    /// Serve as a relay for unreachable peers (unless reachability is forced private).
    pub relay_service: bool,
    pub relay_limits: RelayLimits,
    pub reachability: Reachability,
    /// A private swarm: only peers with this key can even handshake. Disables QUIC,
    /// which cannot carry a pre-shared key.
    pub psk: Option<PreSharedKey>,
    /// Peers kept connected when idle (the hard limit is [`Config::max_connections`]).
    pub target: ConnectionTarget,
    /// Most established connections in all, and per peer.
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    /// Refuse new connections when the process uses more than this share of the
    /// machine's memory.
    pub max_memory_fraction: f64,
    /// How often to re-run the Kademlia bootstrap.
    pub bootstrap_interval: Duration,
    /// How often each of this node's provider records is published again (records live
    /// twice this long), and the least time between two publications: the schedule
    /// stretches rather than burst when there are many keys.
    pub provider_republish: Duration,
    pub provider_republish_gap: Duration,
    /// Deadline for every request the overlay makes (dials, DHT queries, requests).
    pub request_timeout: Duration,
    /// Deadline for a request on a protocol that moves bulk data (blob pieces): several
    /// 4 MiB answers share a provider's uplink, which may be slow.
    pub bulk_request_timeout: Duration,
    /// Largest request and response on the request-response protocols.
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    /// Largest gossip message.
    pub max_gossip_bytes: usize,
    /// Bytes of other peers' requests and gossip handed to the node and not yet finished
    /// with, all peers together and per peer (see [`crate::policy::Budget`]).
    pub max_inbound_bytes: usize,
    pub max_inbound_bytes_per_peer: usize,
    /// Bytes of responses handed to libp2p and not yet taken by their requesters, in
    /// total and per peer: a peer that asks much and reads slowly holds no more.
    pub max_outbound_bytes: usize,
    pub max_outbound_bytes_per_peer: usize,
    /// Requests and gossip messages accepted per peer per second (twice that at once);
    /// beyond, they are dropped before they cost anything.
    pub max_inbound_per_sec: u32,
}

/// Every interface, a random port; TCP, and QUIC unless built without it.
fn default_listen() -> Vec<Multiaddr> {
    let mut v = vec!["/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr")];
    if cfg!(feature = "quic") {
        v.push(
            "/ip4/0.0.0.0/udp/0/quic-v1"
                .parse()
                .expect("valid multiaddr"),
        );
    }
    v
}

impl Config {
    /// Whether this node serves as a relay: asked to, and not known to be unreachable.
    pub fn serves_relay(&self) -> bool {
        self.relay_service && self.reachability != Reachability::Private
    }

    pub fn new(keypair: Keypair) -> Self {
        Config {
            keypair,
            listen: default_listen(),
            bootstrap: Vec::new(),
            known_peers: Vec::new(),
            mdns: true,
            upnp: true,
            dht_mode: DhtMode::Server,
            relay_service: true,
            relay_limits: RelayLimits::default(),
            reachability: Reachability::Auto,
            psk: None,
            target: ConnectionTarget::default(),
            max_connections: 256,
            max_connections_per_peer: 4,
            max_memory_fraction: 0.9,
            bootstrap_interval: Duration::from_secs(300),
            // One publication costs a DHT query and up to 20 ADD_PROVIDERs; a thousand
            // keys every 4 h is about one every 14 s.
            provider_republish: Duration::from_secs(4 * 3600),
            provider_republish_gap: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            // Four 4 MiB pieces in 120 s: an uplink down to about 1 Mbit/s still serves.
            bulk_request_timeout: Duration::from_secs(120),
            max_request_bytes: 4 << 20,
            max_response_bytes: 16 << 20,
            max_gossip_bytes: 1 << 20,
            max_inbound_bytes: 64 << 20,
            max_inbound_bytes_per_peer: 12 << 20,
            max_outbound_bytes: 128 << 20,
            // A blob fetcher keeps four 4 MiB pieces in flight per provider.
            max_outbound_bytes_per_peer: 24 << 20,
            max_inbound_per_sec: 1_000,
        }
    }
}
