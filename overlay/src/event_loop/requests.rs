//! The request-response protocols (`/lattice/sync/1`, `/lattice/blob/1`,
//! `/lattice/service/1`): requests sent and their answers, requests received (charged to
//! the requester's budget) and responses held against its share until sent.

use std::time::Duration;

use libp2p::request_response;
use libp2p::PeerId;
use tracing::debug;

use super::{busy, EventLoop, Pending, MAX_PENDING};
use crate::breaker::State;
use crate::error::Error;
use crate::event::{Event, Responder};
use crate::handle::Reply;
use crate::protocols::Protocol;

/// Answers this small are sent even when the requester's share of answers in flight is
/// used up (uncharged).
const SMALL_RESPONSE: usize = 4 << 10;

impl EventLoop {
    pub(super) fn request(
        &mut self,
        peer: PeerId,
        protocol: Protocol,
        data: Vec<u8>,
        reply: Reply<Vec<u8>>,
    ) {
        if self.requests.len() >= MAX_PENDING {
            return busy(reply);
        }
        let now = std::time::Instant::now();
        if !self.breakers.allow(&peer, now) {
            let wait = match self.breakers.state(&peer, now) {
                State::Open { remaining } => remaining,
                _ => Duration::ZERO,
            };
            let _ = reply.send(Err(Error::Unavailable(peer, wait)));
            return;
        }
        if self.breakers.state(&peer, now) == State::HalfOpen {
            self.show_breaker(&peer, false);
        }
        let b = self.swarm.behaviour_mut();
        let id = match protocol {
            Protocol::Sync => b.sync.send_request(&peer, data),
            // Small (a hash and ranges) and harmless to ask twice.
            Protocol::Blob => {
                let id = b.blob.send_request(&peer, data.clone());
                self.resend.insert(id, (peer, data));
                id
            }
            Protocol::Service => b.service.send_request(&peer, data),
            Protocol::Digest => b.digest.send_request(&peer, data),
        };
        let deadline = if protocol.is_bulk() {
            tokio::time::Instant::now() + self.bulk_timeout
        } else {
            self.deadline()
        };
        self.requests.insert(id, Pending { deadline, reply });
        self.outbound.insert(id, peer);
        self.activity.active(&peer, tokio::time::Instant::now());
    }

    pub(super) fn respond(&mut self, mut r: Responder, data: Vec<u8>) {
        // Held until libp2p reports the response sent (or failed): a requester that reads
        // slowly keeps at most its share of responses in memory. A large answer reserved
        // its share before it was built.
        let charge = r
            .reserved
            .take()
            .or_else(|| self.out_budget.charge(r.peer, data.len()));
        // A small answer goes out even over budget (uncharged): peers that read slowly
        // must not silence the node's "ok" and "refused" to everyone else.
        let charge = match charge {
            Some(c) => Some(c),
            None if data.len() <= SMALL_RESPONSE => None,
            None => {
                debug!(peer = %r.peer, len = data.len(), "response over the peer's budget; dropped");
                return;
            }
        };
        // Every behaviour shares the codec; the channel knows its own stream.
        let b = self.swarm.behaviour_mut();
        match b.sync.send_response(r.channel, data) {
            Ok(()) => {
                if let Some(charge) = charge {
                    // Held until sent or failed; the deadline is only the backstop, as
                    // long as libp2p may keep the answer.
                    let deadline = if r.protocol.is_bulk() {
                        tokio::time::Instant::now() + self.bulk_timeout
                    } else {
                        self.deadline()
                    };
                    self.responding
                        .insert((r.protocol, r.id), (deadline, charge));
                }
            }
            Err(data) => {
                debug!(len = data.len(), "response not sent: the requester is gone")
            }
        }
    }

    /// A request from `peer`, or the answer to one of ours.
    fn message(
        &mut self,
        protocol: Protocol,
        peer: PeerId,
        message: request_response::Message<Vec<u8>, Vec<u8>>,
    ) {
        match message {
            request_response::Message::Request {
                request,
                channel,
                request_id,
            } => {
                // Over budget: the channel is dropped and the peer's request fails at
                // once, before it costs the node anything more.
                let allowed = self.rate.allow(peer, std::time::Instant::now());
                let charge = allowed
                    .then(|| self.budget.charge(peer, request.len()))
                    .flatten();
                let Some(charge) = charge else {
                    debug!(%peer, %protocol, len = request.len(), "request over the peer's budget; dropped");
                    return;
                };
                // Only input that was let in keeps a peer from being idle.
                self.activity.active(&peer, tokio::time::Instant::now());
                self.emit(Event::Request {
                    peer,
                    protocol,
                    data: request,
                    responder: Responder {
                        channel,
                        peer,
                        protocol,
                        id: request_id,
                        _charge: charge,
                        out_budget: self.out_budget.clone(),
                        reserved: None,
                    },
                });
            }
            request_response::Message::Response {
                request_id,
                response,
            } => {
                self.resend.remove(&request_id);
                self.outbound.remove(&request_id);
                if let Some(p) = self.requests.remove(&request_id) {
                    self.activity.active(&peer, tokio::time::Instant::now());
                    if self.breakers.success(&peer) {
                        self.show_breaker(&peer, false);
                    }
                    let _ = p.reply.send(Ok(response));
                }
            }
        }
    }

    pub(super) fn request_event(
        &mut self,
        protocol: Protocol,
        e: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        match e {
            request_response::Event::Message { peer, message, .. } => {
                self.message(protocol, peer, message)
            }
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                debug!(%peer, %error, "request failed");
                self.outbound.remove(&request_id);
                let again = self.resend.remove(&request_id);
                let Some(p) = self.requests.remove(&request_id) else {
                    return;
                };
                match again {
                    // Once, and with the first attempt's deadline.
                    Some((peer, data))
                        if matches!(error, request_response::OutboundFailure::ConnectionClosed)
                            && self.swarm.is_connected(&peer) =>
                    {
                        debug!(%peer, "sending the blob request again on another connection");
                        let id = self.swarm.behaviour_mut().blob.send_request(&peer, data);
                        self.requests.insert(id, p);
                        self.outbound.insert(id, peer);
                    }
                    _ => {
                        self.breaker_failure(peer);
                        let _ = p.reply.send(Err(Error::Request(error.to_string())));
                    }
                }
            }
            request_response::Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                debug!(%peer, %error, "inbound request failed");
                self.responding.remove(&(protocol, request_id));
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.responding.remove(&(protocol, request_id));
            }
        }
    }

    /// A request to `peer` failed or ran out of time, or `peer` sent invalid input.
    pub(super) fn breaker_failure(&mut self, peer: PeerId) {
        let before = self.breakers.opened();
        self.breakers.failure(peer, std::time::Instant::now());
        let opened = self.breakers.opened() > before;
        if opened {
            debug!(%peer, "circuit breaker open: requests to this peer fail at once for a while");
        }
        self.show_breaker(&peer, opened);
    }

    fn show_breaker(&self, peer: &PeerId, opened: bool) {
        if let Some(m) = &self.breaker_metrics {
            m.show(
                peer,
                self.breakers.state(peer, std::time::Instant::now()),
                opened,
            );
        }
    }
}
