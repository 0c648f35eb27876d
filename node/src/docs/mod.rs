//! Replicated documents: one actor task drives a [`lattice_crdt::sync::Replica`] per
//! document over the overlay and the store.
//!
//! - [`Docs`]: the cloneable handle the control socket uses (bounded channel, oneshot
//!   replies).
//! - `actor`: the task — control commands, overlay events, storage commits, ticks.
//! - `hosted`: one hosted document: its replica, topic, watchers, and what its outputs
//!   turn into.
//! - `join`: finding a replica of a document id and fetching its genesis.
//! - [`wire`]: the `/lattice/sync/1` request and response.
//!
//! Durability: every delta a replica applies is queued to the store in order; a write is
//! acknowledged (and broadcast) only once the commit holding it has completed.

mod actor;
mod clocks;
pub mod digests;
mod hosted;
pub(crate) mod join;
mod lag;
mod view;
pub mod wire;

pub use clocks::ClockOffset;
pub use lag::LagStats;
pub use view::{Changed, DocCut, DocSummary, WriterList, Written};

use std::str::FromStr;
use std::sync::Arc;

use lattice_crdt::sync::{AclChange, SyncError};
use lattice_crdt::{ActorId, DocId, Op};
use lattice_overlay::{Event, Overlay};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::auth::NodeAuth;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Control commands waiting for the actor; callers wait when it is this far behind.
const COMMAND_QUEUE: usize = 256;
/// Overlay events waiting for the actor; beyond this they are dropped (gossip is repaired
/// by anti-entropy, unanswered requests time out at their sender).
pub const EVENT_QUEUE: usize = 4_096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocsError {
    #[error("no document {0:?} here (see `lattice doc ls`, or `lattice doc join ID`)")]
    Unknown(String),
    #[error("{alias:?} names {count} documents here; use the id instead")]
    Ambiguous { alias: String, count: usize },
    #[error("document {doc} has no key {key:?}")]
    NoKey { doc: String, key: String },
    #[error("this node is not a writer of document {0} (ask its owner: `lattice doc writers DOC --add PEER`)")]
    NotAWriter(String),
    #[error("{0}")]
    Refused(SyncError),
    #[error("no reachable replica of document {0} answered (is a node holding it online and connected?)")]
    NoReplica(DocId),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("too many writes in flight; try again")]
    Busy,
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("the documents service has stopped")]
    Shutdown,
}

impl DocsError {
    fn from_sync(doc: DocId, e: SyncError) -> Self {
        match e {
            SyncError::NotAWriter { .. } => DocsError::NotAWriter(doc.to_string()),
            SyncError::Write(d) => DocsError::BadRequest(d.to_string()),
            other => DocsError::Refused(other),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, DocsError>>;

/// A write to one document.
#[derive(Debug)]
pub enum Edit {
    Op(Op),
    Writers(Vec<AclChange>),
}

pub(crate) enum Command {
    Create {
        name: String,
        open: bool,
        writers: Vec<ActorId>,
        reply: Reply<DocSummary>,
    },
    Join {
        id: DocId,
        reply: Reply<DocSummary>,
    },
    /// A join found the genesis: host the document.
    Adopt {
        genesis: lattice_crdt::sync::Genesis,
        reply: Reply<DocSummary>,
    },
    List {
        reply: Reply<Vec<DocSummary>>,
    },
    Count {
        reply: Reply<usize>,
    },
    Clocks {
        reply: Reply<Vec<ClockOffset>>,
    },
    Info {
        doc: String,
        reply: Reply<DocSummary>,
    },
    Cut {
        doc: String,
        at_ms: u64,
        reply: Reply<DocCut>,
    },
    Get {
        doc: String,
        key: Option<String>,
        reply: Reply<serde_json::Value>,
    },
    Write {
        doc: String,
        edit: Edit,
        reply: Reply<Written>,
    },
    Writers {
        doc: String,
        reply: Reply<WriterList>,
    },
    Watch {
        doc: String,
        reply: Reply<crate::lossy::Receiver<Changed>>,
    },
}

/// The handle to the documents actor.
#[derive(Clone)]
pub struct Docs {
    tx: mpsc::Sender<Command>,
}

impl Docs {
    /// Loads every stored document and starts the actor. It runs until every handle is
    /// dropped; `events` are the overlay events meant for documents; writes applied are
    /// told to `activity`.
    pub async fn spawn(
        overlay: Overlay,
        store: Store,
        auth: Arc<NodeAuth>,
        events: mpsc::Receiver<Event>,
        metrics: Metrics,
        activity: crate::activity::Activity,
        horizon: std::time::Duration,
    ) -> Result<(Docs, JoinHandle<()>), DocsError> {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let config = actor::sync_config(horizon);
        let actor = actor::Actor::load(
            overlay,
            store,
            auth,
            tx.downgrade(),
            metrics,
            activity,
            config,
        )
        .await?;
        let task = tokio::spawn(actor.run(rx, events));
        Ok((Docs { tx }, task))
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DocsError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| DocsError::Shutdown)?;
        rx.await.map_err(|_| DocsError::Shutdown)?
    }

    pub async fn create(
        &self,
        name: String,
        open: bool,
        writers: Vec<ActorId>,
    ) -> Result<DocSummary, DocsError> {
        self.ask(|reply| Command::Create {
            name,
            open,
            writers,
            reply,
        })
        .await
    }

    pub async fn join(&self, id: &str) -> Result<DocSummary, DocsError> {
        let id = DocId::from_str(id).map_err(|e| DocsError::BadRequest(e.to_string()))?;
        self.ask(|reply| Command::Join { id, reply }).await
    }

    pub async fn list(&self) -> Result<Vec<DocSummary>, DocsError> {
        self.ask(|reply| Command::List { reply }).await
    }

    /// How many documents this node hosts.
    pub async fn count(&self) -> Result<usize, DocsError> {
        self.ask(|reply| Command::Count { reply }).await
    }

    /// Fresh writes' clocks against this node's, largest offset first.
    pub async fn clock_offsets(&self) -> Result<Vec<ClockOffset>, DocsError> {
        self.ask(|reply| Command::Clocks { reply }).await
    }

    pub async fn info(&self, doc: String) -> Result<DocSummary, DocsError> {
        self.ask(|reply| Command::Info { doc, reply }).await
    }

    /// What this node holds of `doc` at hybrid-clock time `at_ms`, its clock moved past
    /// it first (see [`lattice_crdt::sync::Replica::cut`]).
    pub async fn cut(&self, doc: String, at_ms: u64) -> Result<DocCut, DocsError> {
        self.ask(|reply| Command::Cut { doc, at_ms, reply }).await
    }

    pub async fn get(
        &self,
        doc: String,
        key: Option<String>,
    ) -> Result<serde_json::Value, DocsError> {
        self.ask(|reply| Command::Get { doc, key, reply }).await
    }

    /// Applies `edit`; returns once it is durable.
    pub async fn write(&self, doc: String, edit: Edit) -> Result<Written, DocsError> {
        self.ask(|reply| Command::Write { doc, edit, reply }).await
    }

    pub async fn writers(&self, doc: String) -> Result<WriterList, DocsError> {
        self.ask(|reply| Command::Writers { doc, reply }).await
    }

    /// A stream of the document's changes; it ends when the receiver is dropped, or after
    /// telling a reader that fell behind how many changes it missed.
    pub async fn watch(&self, doc: String) -> Result<crate::lossy::Receiver<Changed>, DocsError> {
        self.ask(|reply| Command::Watch { doc, reply }).await
    }
}
