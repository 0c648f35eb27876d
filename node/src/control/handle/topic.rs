//! `topic.*`.

use super::{answer, misrouted};
use crate::control::api::{self, method, ApiError, Command, Done};
use crate::control::server::Answer;
use crate::control::{stream_lossy, strings};
use crate::topics::Topics;

pub(super) async fn call(topics: &Topics, command: Command) -> Result<Answer, ApiError> {
    match command {
        Command::TopicPublish(a) => {
            topics.publish(&a.topic, a.message.as_bytes()).await?;
            answer::<method::TopicPublish>(Done {})
        }
        Command::TopicSubscribe(a) => Ok(stream_lossy::<_, api::TopicMessage>(
            topics.subscribe(&a.topic).await?,
            "messages",
        )),
        Command::TopicPeers(a) => {
            let mut peers = strings(&topics.peers(&a.topic));
            peers.sort();
            answer::<method::TopicPeers>(peers)
        }
        other => Err(misrouted(&other)),
    }
}
