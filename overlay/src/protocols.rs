//! Versioned protocol names. Lattice runs its own DHT and protocols, never the public
//! IPFS ones, so strangers on the same network do not mix with a Lattice swarm.

use libp2p::StreamProtocol;

/// Kademlia, under Lattice's own name.
pub const KAD: StreamProtocol = StreamProtocol::new("/lattice/kad/1.0.0");
/// Document anti-entropy (request-response).
pub const SYNC: StreamProtocol = StreamProtocol::new("/lattice/sync/1");
/// Verified blob chunk ranges (request-response).
pub const BLOB: StreamProtocol = StreamProtocol::new("/lattice/blob/1");
/// "Do you offer this service, and with what metadata?" (request-response).
pub const SERVICE: StreamProtocol = StreamProtocol::new("/lattice/service/1");
/// Digests of the documents two peers both replicate, compared before any document's
/// summary is sent (request-response).
pub const DIGEST: StreamProtocol = StreamProtocol::new("/lattice/digest/1");
/// The request-response protocols, as a type: what a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// [`SYNC`].
    Sync,
    /// [`BLOB`].
    Blob,
    /// [`SERVICE`].
    Service,
    /// [`DIGEST`].
    Digest,
}

impl Protocol {
    /// Whether its answers carry bulk data (and get [`crate::Config::bulk_request_timeout`]).
    pub fn is_bulk(self) -> bool {
        self == Protocol::Blob
    }

    /// The protocol's name on the wire.
    pub fn name(self) -> StreamProtocol {
        match self {
            Protocol::Sync => SYNC,
            Protocol::Blob => BLOB,
            Protocol::Service => SERVICE,
            Protocol::Digest => DIGEST,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name().as_ref())
    }
}

/// The identify protocol version Lattice announces. Other implementations announce their
/// own; a peer joins the routing table by listing [`KAD`] among its protocols, whatever
/// its version says.
pub const IDENTIFY_VERSION: &str = "/lattice/1.0.0";
