//! [`Overlay`]: the cloneable handle through which the node drives the swarm task.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

use crate::protocols::Protocol;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::event::{GossipId, Responder, Verdict};

/// Commands waiting for the swarm task: callers wait when it is this far behind.
pub(crate) const COMMAND_CAPACITY: usize = 256;

/// A snapshot of the node's place in the network.
#[derive(Clone, Debug)]
pub struct Info {
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    pub external_addrs: Vec<Multiaddr>,
    pub connected_peers: usize,
    pub dht_peers: usize,
    pub blocked: Vec<PeerId>,
    pub allow_only: Option<Vec<PeerId>>,
    /// What AutoNAT found (or what configuration forces).
    pub nat: Nat,
    /// This node serves as a relay.
    pub relay_service: bool,
    /// `/p2p-circuit` addresses reserved on relays, at which unreachable nodes are found.
    pub relayed_addrs: Vec<Multiaddr>,
    /// What UPnP last said, if it ran.
    pub upnp: Option<String>,
    /// How a NAT on the way maps this node's port, per transport, from what peers see.
    pub mapping: Vec<crate::Observed>,
    /// Peers the connection manager keeps connected when idle.
    pub target: crate::ConnectionTarget,
    /// Idle peers it has disconnected since start.
    pub trimmed: u64,
}

/// Whether this node can be reached from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Not known yet: AutoNAT needs peers to dial back.
    Unknown,
    /// Peers could dial this address (or configuration says the node is reachable).
    Public(Option<Multiaddr>),
    /// Peers could not dial back (or configuration says so).
    Private,
}

/// A known peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
    /// Last ping round trip.
    pub rtt: Option<Duration>,
    pub connected: bool,
    /// Connected only through relays (no direct connection yet).
    pub relayed: bool,
    /// In this node's Kademlia routing table.
    pub in_dht: bool,
    /// Whether requests to it go (see [`crate::breaker`]).
    pub breaker: crate::breaker::State,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What a handle asks of the swarm task. Those with a `reply` are answered (within the
/// task's deadline); the rest are fire-and-forget.
#[derive(Debug)]
pub(crate) enum Command {
    // The node and its peers (event_loop/peers.rs).
    Info {
        reply: Reply<Info>,
    },
    Peers {
        reply: Reply<Vec<PeerInfo>>,
    },
    RoutingTable {
        reply: Reply<Vec<PeerInfo>>,
    },
    Dial {
        addr: Multiaddr,
        /// Look a bare peer id up in the DHT when no address is known.
        lookup: bool,
        reply: Reply<PeerId>,
    },
    Block {
        peers: Vec<PeerId>,
        reply: Reply<()>,
    },
    Unblock {
        peers: Vec<PeerId>,
        reply: Reply<()>,
    },
    AllowOnly {
        peers: Vec<PeerId>,
        reply: Reply<()>,
    },
    AllowAll {
        reply: Reply<()>,
    },
    Strike {
        peer: PeerId,
    },
    // Gossip (event_loop/gossip.rs).
    Subscribe {
        topic: String,
        reply: Reply<()>,
    },
    Unsubscribe {
        topic: String,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    ReportGossip {
        id: GossipId,
        source: PeerId,
        verdict: Verdict,
    },
    // Requests and responses (event_loop/requests.rs).
    Request {
        peer: PeerId,
        protocol: Protocol,
        data: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    Respond {
        responder: Box<Responder>,
        data: Vec<u8>,
    },
    // DHT records (event_loop/dht.rs).
    Provide {
        key: Vec<u8>,
        reply: Reply<()>,
    },
    Providers {
        key: Vec<u8>,
        reply: Reply<Vec<PeerId>>,
    },
    Unprovide {
        key: Vec<u8>,
    },
}

/// The handle to a running overlay. Cheap to clone; every method has a deadline.
/// Dropping every handle stops the swarm task.
#[derive(Clone, Debug)]
pub struct Overlay {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) peer_id: PeerId,
    /// Peers whose circuit breaker is not closed ([`Overlay::failing`]).
    pub(crate) tripped: crate::breaker::Tripped,
    pub(crate) timeout: Duration,
    pub(crate) bulk_timeout: Duration,
}

impl Overlay {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Whether `peer`'s circuit breaker is open or half-open: its recent requests kept
    /// failing. Callers choosing among peers put such peers last, so they route around
    /// them and ask them only when nobody else will do (which is also how a probe goes).
    pub fn failing(&self, peer: &PeerId) -> bool {
        self.tripped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(peer)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        // The swarm task answers every command itself within the configured deadline;
        // the margin covers queueing.
        self.call_within(self.timeout * 4, make).await
    }

    async fn call_within<T>(
        &self,
        deadline: Duration,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        tokio::time::timeout(deadline, async {
            self.tx.send(make(tx)).await.map_err(|_| Error::Shutdown)?;
            rx.await.map_err(|_| Error::Shutdown)?
        })
        .await
        .map_err(|_| Error::Timeout(deadline))?
    }

    fn tell(&self, cmd: Command) -> Result<(), Error> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Busy(COMMAND_CAPACITY),
            mpsc::error::TrySendError::Closed(_) => Error::Shutdown,
        })
    }

    pub async fn info(&self) -> Result<Info, Error> {
        self.call(|reply| Command::Info { reply }).await
    }

    /// Connected peers, then peers known only from the DHT.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// The routing table: each peer with the addresses the DHT holds for it (the ones
    /// it announced itself, which others can dial), connected or not.
    pub async fn routing_table(&self) -> Result<Vec<PeerInfo>, Error> {
        self.call(|reply| Command::RoutingTable { reply }).await
    }

    /// Connects to an address (which may be just `/p2p/<peer id>`: the addresses this node
    /// knows, else those a DHT lookup of the peer finds). Returns the peer once connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        self.call(|reply| Command::Dial {
            addr,
            lookup: true,
            reply,
        })
        .await
    }

    /// Connects to a peer by id alone, through the addresses known here (the routing
    /// table, connections, the peer store), without a DHT lookup: it fails at once if
    /// there are none. At once if the peer is already connected.
    pub async fn dial_peer(&self, peer: PeerId) -> Result<PeerId, Error> {
        let addr = Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(peer));
        self.call(|reply| Command::Dial {
            addr,
            lookup: false,
            reply,
        })
        .await
    }

    /// Disconnects the peers and refuses them until unblocked.
    pub async fn block(&self, peers: Vec<PeerId>) -> Result<(), Error> {
        self.call(|reply| Command::Block { peers, reply }).await
    }

    pub async fn unblock(&self, peers: Vec<PeerId>) -> Result<(), Error> {
        self.call(|reply| Command::Unblock { peers, reply }).await
    }

    /// Talks only to these peers (plus none blocked): everyone else is disconnected.
    pub async fn allow_only(&self, peers: Vec<PeerId>) -> Result<(), Error> {
        self.call(|reply| Command::AllowOnly { peers, reply }).await
    }

    pub async fn allow_all(&self) -> Result<(), Error> {
        self.call(|reply| Command::AllowAll { reply }).await
    }

    pub async fn subscribe(&self, topic: impl Into<String>) -> Result<(), Error> {
        let topic = topic.into();
        self.call(|reply| Command::Subscribe { topic, reply }).await
    }

    /// Leaves a topic (no reply: it cannot fail).
    pub fn unsubscribe(&self, topic: impl Into<String>) -> Result<(), Error> {
        self.tell(Command::Unsubscribe {
            topic: topic.into(),
        })
    }

    /// Stops announcing `key` (records already stored elsewhere expire with their TTL).
    pub fn unprovide(&self, key: Vec<u8>) -> Result<(), Error> {
        self.tell(Command::Unprovide { key })
    }

    pub async fn publish(&self, topic: impl Into<String>, data: Vec<u8>) -> Result<(), Error> {
        let topic = topic.into();
        self.call(|reply| Command::Publish { topic, data, reply })
            .await
    }

    /// Delivers the verdict on a gossip message; only accepted messages are forwarded.
    pub fn report_gossip(
        &self,
        id: GossipId,
        source: PeerId,
        verdict: Verdict,
    ) -> Result<(), Error> {
        self.tell(Command::ReportGossip {
            id,
            source,
            verdict,
        })
    }

    /// Reports that `peer` sent invalid input; enough strikes within a window block it
    /// (see [`crate::policy::Strikes`]).
    pub fn strike(&self, peer: PeerId) -> Result<(), Error> {
        self.tell(Command::Strike { peer })
    }

    /// Sends a request and waits for the response (bounded by the request timeout, or the
    /// bulk one for blob pieces).
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: Protocol,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, Error> {
        let deadline = if protocol.is_bulk() {
            self.bulk_timeout + self.timeout
        } else {
            self.timeout * 4
        };
        self.call_within(deadline, |reply| Command::Request {
            peer,
            protocol,
            data,
            reply,
        })
        .await
    }

    pub fn respond(&self, responder: Responder, data: Vec<u8>) -> Result<(), Error> {
        self.tell(Command::Respond {
            responder: Box::new(responder),
            data,
        })
    }

    /// Announces in the DHT that this node provides `key`.
    pub async fn provide(&self, key: Vec<u8>) -> Result<(), Error> {
        self.call(|reply| Command::Provide { key, reply }).await
    }

    /// Peers the DHT knows to provide `key`.
    pub async fn providers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, Error> {
        self.call(|reply| Command::Providers { key, reply }).await
    }
}
