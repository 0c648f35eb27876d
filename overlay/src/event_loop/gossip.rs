//! Gossipsub: topics joined and left, messages published, messages received (charged to
//! the peer that forwarded them) and the node's verdict on each.

use libp2p::{gossipsub, PeerId};
use tracing::debug;

use super::EventLoop;
use crate::error::Error;
use crate::event::{Event, GossipId, Verdict};

impl EventLoop {
    pub(super) fn subscribe(&mut self, topic: String) -> Result<(), Error> {
        let t = gossipsub::IdentTopic::new(topic);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&t)
            .map(|_| ())
            .map_err(|e| Error::Gossip(e.to_string()))
    }

    pub(super) fn unsubscribe(&mut self, topic: String) {
        let t = gossipsub::IdentTopic::new(topic);
        self.swarm.behaviour_mut().gossipsub.unsubscribe(&t);
    }

    pub(super) fn publish(&mut self, topic: String, data: Vec<u8>) -> Result<(), Error> {
        let t = gossipsub::IdentTopic::new(topic);
        match self.swarm.behaviour_mut().gossipsub.publish(t, data) {
            Ok(_) => Ok(()),
            // Nobody to send to yet: not an error for the writer; anti-entropy delivers
            // later.
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
            Err(e) => Err(Error::Gossip(e.to_string())),
        }
    }

    pub(super) fn report_gossip(&mut self, id: GossipId, source: PeerId, verdict: Verdict) {
        let acceptance = match verdict {
            Verdict::Accept => gossipsub::MessageAcceptance::Accept,
            Verdict::Reject => gossipsub::MessageAcceptance::Reject,
            Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id.0, &source, acceptance);
    }

    pub(super) fn gossip_event(&mut self, e: gossipsub::Event) {
        match e {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let allowed = self
                    .rate
                    .allow(propagation_source, std::time::Instant::now());
                let charge = allowed
                    .then(|| self.budget.charge(propagation_source, message.data.len()))
                    .flatten();
                let Some(charge) = charge else {
                    debug!(peer = %propagation_source, "gossip over the peer's budget; ignored");
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Ignore,
                        );
                    return;
                };
                self.activity
                    .active(&propagation_source, tokio::time::Instant::now());
                self.emit(Event::Gossip {
                    topic: message.topic.into_string(),
                    source: propagation_source,
                    author: message.source,
                    id: GossipId(message_id),
                    data: message.data,
                    charge,
                })
            }
            gossipsub::Event::Subscribed { peer_id, topic } => self.emit(Event::Subscribed {
                peer: peer_id,
                topic: topic.into_string(),
            }),
            gossipsub::Event::Unsubscribed { peer_id, topic } => self.emit(Event::Unsubscribed {
                peer: peer_id,
                topic: topic.into_string(),
            }),
            _ => {}
        }
    }
}
