//! One document this node hosts: its metadata, replica and watchers, and how it answers
//! reads.

use std::collections::BTreeMap;

use crate::lossy;
use lattice_crdt::sync::Replica;
use lattice_crdt::DocId;
use tracing::warn;

use super::lag::Lags;
use super::view::{Changed, DocSummary, WriterList};
use super::DocsError;
use crate::store::DocMeta;

/// Watchers of one document; more are refused.
pub(super) const MAX_WATCHERS: usize = 32;
/// Changes queued for a watcher that reads slowly; a watcher further behind is told how
/// many changes it missed and its stream ends, rather than stalling replication.
pub(super) const WATCH_QUEUE: usize = 1_024;

pub(super) struct Hosted {
    pub id: DocId,
    pub meta: DocMeta,
    pub replica: Replica,
    pub watchers: Vec<lossy::Sender<Changed>>,
    /// The replica's digest, kept until its next input (see [`Hosted::digest`]).
    digest: Option<[u8; 8]>,
    /// Recent writes' sync lag.
    pub lags: Lags,
    /// The replica's [`Replica::acks_version`] last saved.
    pub acks_saved: u64,
}

impl Hosted {
    pub fn new(meta: DocMeta, replica: Replica) -> Self {
        let replica_acks_version = replica.acks_version();
        Hosted {
            id: meta.id(),
            meta,
            replica,
            watchers: Vec::new(),
            digest: None,
            lags: Lags::default(),
            acks_saved: replica_acks_version,
        }
    }

    /// The replica's [`Replica::state_digest`], computed once per change: digest
    /// comparisons read every shared document's, every few seconds.
    pub fn digest(&mut self) -> [u8; 8] {
        *self
            .digest
            .get_or_insert_with(|| self.replica.state_digest())
    }

    /// Feeds the replica an input (the only way it changes).
    pub fn handle(
        &mut self,
        now_ms: u64,
        input: lattice_crdt::sync::Input,
    ) -> Result<(), lattice_crdt::sync::SyncError> {
        // Learning what a peer holds changes nothing the digest covers (asked of every
        // shared document after each equal comparison).
        if !matches!(input, lattice_crdt::sync::Input::PeerHolds(_)) {
            self.digest = None;
        }
        self.replica.handle(now_ms, input)
    }

    pub fn name(&self) -> &str {
        &self.meta.genesis.name
    }

    pub fn summary(&self) -> DocSummary {
        let doc = self.replica.doc();
        let state = lattice_crdt::codec::encode(doc.state());
        DocSummary {
            id: self.id,
            name: self.name().to_owned(),
            open: self.meta.genesis.open,
            owner: self.meta.genesis.owner,
            digest: *blake3::hash(&state).as_bytes(),
            keys: doc.root().len(),
            deltas: self.replica.log_len(),
            replicas: self.replica.peers().count(),
            lag: self.lags.stats(crate::now_ms()),
            behind: self.replica.behind(),
            log_bytes: self.replica.log_bytes() as u64,
            state_bytes: state.len() as u64,
        }
    }

    pub fn writers(&self) -> WriterList {
        let acl = self.replica.acl();
        WriterList {
            doc: self.id,
            open: acl.is_open(),
            owner: self.meta.genesis.owner,
            writers: acl.writers().map(|(w, s)| (*w, *s)).collect(),
        }
    }

    pub fn get(&self, key: Option<&str>) -> Result<serde_json::Value, DocsError> {
        let doc = self.replica.doc();
        match key {
            None => Ok(doc.to_json()),
            Some(k) => doc.get(&[k]).ok_or_else(|| DocsError::NoKey {
                doc: self.id.to_string(),
                key: k.to_owned(),
            }),
        }
    }

    /// The top-level content before a change, if anyone is watching.
    pub fn snapshot_if_watched(&mut self) -> Option<serde_json::Value> {
        self.watchers.retain(|w| !w.is_closed());
        (!self.watchers.is_empty()).then(|| self.replica.doc().to_json())
    }

    /// Tells every watcher which top-level keys changed since `before`.
    pub fn notify(
        &mut self,
        before: serde_json::Value,
        local: bool,
        authors: &std::collections::BTreeSet<lattice_crdt::ActorId>,
    ) {
        let after = self.replica.doc().to_json();
        let empty = serde_json::Map::new();
        let (old, new) = (
            before.as_object().unwrap_or(&empty),
            after.as_object().unwrap_or(&empty),
        );
        let mut changes = BTreeMap::new();
        for (k, v) in new {
            if old.get(k) != Some(v) {
                changes.insert(k.clone(), v.clone());
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            changes.insert(k.clone(), serde_json::Value::Null);
        }
        if changes.is_empty() {
            return;
        }
        let change = Changed {
            doc: self.id,
            local,
            authors: authors.iter().copied().collect(),
            changes,
        };
        let id = self.id;
        self.watchers.retain(|w| {
            let was = w.lagging();
            let open = w.send(change.clone());
            if open && !was && w.lagging() {
                warn!(doc = %id, "a watcher fell {WATCH_QUEUE} changes behind; it will be told what it missed and its stream ends");
            }
            open
        });
    }
}
