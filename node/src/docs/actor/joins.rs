//! Creating and joining documents. A joined document's replica waits for a replica before
//! local writes (this node may have written to it before losing its store), and the join
//! answers once it has caught up, or after [`JOIN_WAIT`].

use std::time::Duration;

use lattice_crdt::sync::Genesis;
use lattice_crdt::DocId;
use tracing::info;

use super::{now_ms, Actor, MAX_BACKGROUND};
use crate::docs::hosted::Hosted;
use crate::docs::DocSummary;
use crate::docs::{join, wire, Command, DocsError, Reply};
use crate::store::DocMeta;

/// How long a join waits for a replica to catch the new replica up before answering.
const JOIN_WAIT: Duration = Duration::from_secs(5);

impl Actor {
    /// A join found the genesis: hosts the document, and answers once it caught up.
    pub(super) async fn adopt_joined(&mut self, genesis: Genesis, reply: Reply<DocSummary>) {
        match self.adopt(genesis, true).await {
            Ok(info) if self.catching_up(info.id) => {
                let deadline = now_ms() + JOIN_WAIT.as_millis() as u64;
                self.joining
                    .entry(info.id)
                    .or_default()
                    .push((reply, deadline));
                self.timers.at_most(info.id, deadline);
            }
            Ok(info) => {
                let _ = reply.send(Ok(info));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Hosts a new or joined document (idempotent) and describes it. A joined one waits for
    /// a replica before local writes (see `Replica::catching_up`).
    pub(super) async fn adopt(
        &mut self,
        genesis: Genesis,
        joined: bool,
    ) -> Result<DocSummary, DocsError> {
        join::check(&genesis, None)?;
        let id = genesis.id();
        if let Some(h) = self.docs.get(&id) {
            return Ok(h.summary());
        }
        let meta = DocMeta {
            genesis,
            added_ms: now_ms(),
        };
        self.store.put_doc(meta.clone()).await?;
        let id = self.host(meta, Vec::new(), Vec::new(), joined).await;
        info!(doc = %id, "document hosted");
        Ok(self.docs[&id].summary())
    }

    pub(super) fn join(&mut self, id: DocId, reply: Reply<DocSummary>) {
        if let Some(h) = self.docs.get(&id) {
            let _ = reply.send(Ok(h.summary()));
            return;
        }
        if self.background.len() >= MAX_BACKGROUND {
            let _ = reply.send(Err(DocsError::Busy));
            return;
        }
        let known = self.subs.peers(&wire::topic(&id));
        let (overlay, commands) = (self.overlay.clone(), self.commands.clone());
        self.background.spawn(async move {
            let genesis = match join::find_genesis(overlay, id, known).await {
                Ok(g) => g,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            // Back to the actor to host it; if it has stopped, the reply is dropped.
            if let Some(tx) = commands.upgrade() {
                let _ = tx.send(Command::Adopt { genesis, reply }).await;
            }
        });
    }

    /// True if `id`'s replica still waits for a replica before local writes.
    pub(super) fn catching_up(&self, id: DocId) -> bool {
        self.docs
            .get(&id)
            .is_some_and(|h| h.replica.is_catching_up())
    }

    /// Answers the joins of `id` waiting for it to catch up, once it has (or, with
    /// `expired`, those past their deadline).
    pub(super) fn answer_joins(&mut self, id: DocId, expired: bool) {
        if !self.joining.contains_key(&id) {
            return;
        }
        let caught_up = !self.catching_up(id);
        let now = now_ms();
        let Some(waiting) = self.joining.remove(&id) else {
            return;
        };
        let mut still = Vec::new();
        for (reply, deadline) in waiting {
            if caught_up || (expired && now >= deadline) {
                let info = self
                    .docs
                    .get(&id)
                    .map(Hosted::summary)
                    .ok_or(DocsError::Unknown(id.to_string()));
                let _ = reply.send(info);
            } else {
                still.push((reply, deadline));
            }
        }
        if !still.is_empty() {
            self.joining.insert(id, still);
        }
    }
}
