//! `topic.*`.

use serde::{Deserialize, Serialize};

/// `topic.publish` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishParams {
    pub topic: String,
    pub message: String,
}

/// `topic.subscribe` and `topic.peers` parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubscribeParams {
    pub topic: String,
}

/// `topic.subscribe` events: one message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopicMessage {
    pub topic: String,
    /// The publishing peer (gossipsub signs every message).
    pub from: Option<String>,
    /// The message, as text (invalid UTF-8 replaced).
    pub data: String,
}
