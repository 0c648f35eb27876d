//! What the overlay tells the node.

use libp2p::request_response::{InboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId};

use crate::protocols::Protocol;

use crate::policy::{Budget, Charge};

/// An event from the overlay. Delivered on a bounded channel; if the node falls behind,
/// events are dropped (and counted) rather than stalling the network: gossip is repaired
/// by anti-entropy, and an unanswered request times out at its sender.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    PeerConnected {
        peer: PeerId,
        addr: Multiaddr,
    },
    PeerDisconnected {
        peer: PeerId,
    },
    /// A gossip message awaiting validation: answer with [`crate::Overlay::report_gossip`]
    /// before it is forwarded to anyone.
    Gossip {
        topic: String,
        source: PeerId,
        author: Option<PeerId>,
        id: GossipId,
        data: Vec<u8>,
        /// The message's bytes against the sender's budget: hold it while working on the
        /// message.
        charge: Charge,
    },
    /// A connected peer subscribed to a topic (also reported for its subscriptions when
    /// it connects).
    Subscribed {
        peer: PeerId,
        topic: String,
    },
    Unsubscribed {
        peer: PeerId,
        topic: String,
    },
    /// A request to answer with [`crate::Overlay::respond`].
    Request {
        peer: PeerId,
        protocol: Protocol,
        data: Vec<u8>,
        responder: Responder,
    },
}

/// Identifies a gossip message for its validation verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipId(pub(crate) libp2p::gossipsub::MessageId);

/// Where to send a request's response. It holds the request's bytes against the
/// sender's budget until the response is sent or the responder dropped.
#[derive(Debug)]
pub struct Responder {
    pub(crate) channel: ResponseChannel<Vec<u8>>,
    pub(crate) peer: PeerId,
    pub(crate) protocol: Protocol,
    pub(crate) id: InboundRequestId,
    pub(crate) _charge: Charge,
    /// The requester's share of responses in flight, to reserve from before building a
    /// large answer.
    pub(crate) out_budget: Budget,
    pub(crate) reserved: Option<Charge>,
}

impl Responder {
    /// Reserves `bytes` of the requester's share of responses in flight, before building
    /// an answer that large; false if its share is used up (answer "busy" instead, which
    /// costs nothing). The reservation covers the response when it is sent.
    pub fn reserve(&mut self, bytes: usize) -> bool {
        if self.reserved.is_none() {
            self.reserved = self.out_budget.charge(self.peer, bytes);
        }
        self.reserved.is_some()
    }
}

/// The verdict on a gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop, and penalise the peer that sent it.
    Reject,
    /// Not valid here, but not the sender's fault: drop without penalty.
    Ignore,
}
