//! Lattice's overlay network: the libp2p swarm (Kademlia, gossipsub, request-response,
//! identify, ping, mDNS and NAT traversal), run as one task behind a cloneable handle.
//!
//! Not built yet: this crate is filled by issue #3 ("A node that joins the Kademlia
//! overlay"). It deliberately exports nothing, so nothing can depend on behaviour that
//! does not exist.
