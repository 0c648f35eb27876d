//! Topics: message streams over gossipsub for applications that want one without a
//! broker. `publish` sends to every subscriber in the overlay; `subscribe` streams what
//! arrives to local clients. The node subscribes to a topic's gossip while at least one
//! local client listens, and leaves it after the last one has gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::lossy;
use lattice_overlay::{GossipId, Overlay, PeerId, Verdict};
use tracing::warn;

use crate::subs::Subscriptions;

/// Largest message, in bytes.
pub const MAX_MESSAGE: usize = 64 << 10;
/// Messages queued for a slow local subscriber; one further behind is told how many it
/// missed and its stream ends.
const QUEUE: usize = 1_024;
/// Local subscribers, all topics together.
const MAX_SUBSCRIBERS: usize = 1_024;
/// Gossip topic names of application topics start with this.
const PREFIX: &str = "/lattice/topic/";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    #[error("invalid topic name {0:?}: 1 to 128 printable characters, no spaces")]
    BadName(String),
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("too many local subscribers ({MAX_SUBSCRIBERS})")]
    Busy,
    #[error("network: {0}")]
    Network(#[from] lattice_overlay::Error),
}

/// A message as subscribers receive it.
#[derive(Clone, Debug)]
pub struct TopicMessage {
    pub topic: String,
    /// The publishing peer (gossipsub signs every message).
    pub from: Option<PeerId>,
    pub data: Arc<[u8]>,
}

fn check(topic: &str) -> Result<(), TopicError> {
    let ok = !topic.is_empty() && topic.len() <= 128 && topic.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(TopicError::BadName(topic.to_owned()))
    }
}

/// The gossip topic behind an application topic, or the application topic of a gossip
/// topic.
pub fn gossip_topic(topic: &str) -> String {
    format!("{PREFIX}{topic}")
}

pub fn app_topic(gossip: &str) -> Option<&str> {
    gossip.strip_prefix(PREFIX)
}

type Subscribers = HashMap<String, Vec<lossy::Sender<TopicMessage>>>;

#[derive(Clone)]
pub struct Topics {
    overlay: Overlay,
    subs: Arc<Mutex<Subscribers>>,
    remote: Arc<Mutex<Subscriptions>>,
}

impl Topics {
    pub fn new(overlay: Overlay) -> Self {
        Topics {
            overlay,
            subs: Arc::new(Mutex::new(HashMap::new())),
            remote: Arc::default(),
        }
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        crate::lock(&self.remote)
    }

    /// Records that `peer` subscribed to (or left) a gossip topic.
    pub fn track(&self, gossip: &str, peer: PeerId, subscribed: bool) {
        let Some(topic) = app_topic(gossip) else {
            return;
        };
        let mut remote = self.remote();
        if subscribed {
            remote.add(topic, peer);
        } else {
            remote.remove(topic, &peer);
        }
    }

    /// Forgets a disconnected peer's subscriptions.
    pub fn forget(&self, peer: &PeerId) {
        self.remote().forget(peer);
    }

    /// Connected peers known to subscribe to `topic`.
    pub fn peers(&self, topic: &str) -> Vec<PeerId> {
        self.remote().peers(topic)
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        crate::lock(&self.subs)
    }

    pub async fn publish(&self, topic: &str, message: &[u8]) -> Result<(), TopicError> {
        check(topic)?;
        if message.len() > MAX_MESSAGE {
            return Err(TopicError::TooLarge(message.len()));
        }
        self.overlay
            .publish(gossip_topic(topic), message.to_vec())
            .await?;
        // Gossip never hands a node its own messages: local subscribers get them here.
        let msg = TopicMessage {
            topic: topic.to_owned(),
            from: Some(self.overlay.peer_id()),
            data: message.into(),
        };
        self.hand_out(topic, &msg);
        Ok(())
    }

    /// A stream of the topic's messages; it ends when the receiver is dropped, or after
    /// telling a reader that fell behind how many messages it missed.
    pub async fn subscribe(
        &self,
        topic: &str,
    ) -> Result<lossy::Receiver<TopicMessage>, TopicError> {
        check(topic)?;
        let (tx, rx) = lossy::channel(QUEUE);
        let first = {
            let mut subs = self.subs();
            let total: usize = subs.values().map(Vec::len).sum();
            if total >= MAX_SUBSCRIBERS {
                return Err(TopicError::Busy);
            }
            let list = subs.entry(topic.to_owned()).or_default();
            list.retain(|s| !s.is_closed());
            list.push(tx);
            list.len() == 1
        };
        if first {
            self.overlay.subscribe(gossip_topic(topic)).await?;
        }
        Ok(rx)
    }

    /// Gives `msg` to every local subscriber of `topic`, dropping the gone and the slow;
    /// false if nobody here listens any more.
    fn hand_out(&self, topic: &str, msg: &TopicMessage) -> bool {
        let mut subs = self.subs();
        let Some(list) = subs.get_mut(topic) else {
            return false;
        };
        list.retain(|s| {
            let was = s.lagging();
            let open = s.send(msg.clone());
            if open && !was && s.lagging() {
                warn!(topic, "a subscriber fell {QUEUE} messages behind; it will be told what it missed and its stream ends");
            }
            open
        });
        if list.is_empty() {
            subs.remove(topic);
            return false;
        }
        true
    }

    /// Validates a gossip message on an application topic and hands it to local
    /// subscribers; leaves the topic once nobody here listens.
    pub fn deliver(
        &self,
        gossip: &str,
        author: Option<PeerId>,
        id: GossipId,
        source: PeerId,
        data: Vec<u8>,
    ) {
        let Some(topic) = app_topic(gossip) else {
            return;
        };
        let verdict = if data.len() > MAX_MESSAGE {
            Verdict::Reject
        } else {
            let msg = TopicMessage {
                topic: topic.to_owned(),
                from: author,
                data: data.into(),
            };
            if self.hand_out(topic, &msg) {
                Verdict::Accept
            } else {
                let _ = self.overlay.unsubscribe(gossip.to_owned());
                Verdict::Ignore
            }
        };
        let _ = self.overlay.report_gossip(id, source, verdict);
    }
}
