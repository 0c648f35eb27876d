//! Access control inside a [`Replica`]: turning the owner's edits into ops, applying the
//! ops an owner's delta carries, and cutting a removed writer out of the log, the disk and
//! the document.

use super::Replica;
use crate::doc::Doc;
use crate::id::ActorId;
use crate::sync::acl::{Acl, AclChange, AclOp, Standing};
use crate::sync::interface::{Event, Output, SyncError};
use crate::sync::message::SignedDelta;

impl Replica {
    /// Turns the owner's edits into the ops every replica will apply, all or none: each
    /// is judged as if the ones before it had applied, and one refusal refuses them all.
    pub(super) fn acl_ops(&self, changes: Vec<AclChange>) -> Result<Vec<AclOp>, SyncError> {
        let mut acl = self.acl.clone();
        let mut ops = Vec::with_capacity(changes.len());
        for change in changes {
            let op = self.acl_op(&acl, change)?;
            acl.apply(&op);
            ops.push(op);
        }
        Ok(ops)
    }

    /// Turns one edit into its op, judged against `acl`.
    fn acl_op(&self, acl: &Acl, change: AclChange) -> Result<AclOp, SyncError> {
        if acl.is_open() {
            return Err(SyncError::OpenDocument);
        }
        if acl.owner() != Some(self.actor) {
            return Err(SyncError::NotOwner);
        }
        let removed = |w: &ActorId| acl.writers().any(|(x, s)| x == w && *s != Standing::Writer);
        Ok(match change {
            AclChange::Add(w) if removed(&w) => {
                return Err(SyncError::RemovedForGood { writer: w })
            }
            AclChange::Add(w) => AclOp::Add(w),
            AclChange::Remove(w) if w == self.actor => return Err(SyncError::OwnerRemoval),
            AclChange::Remove(w) => AclOp::Remove {
                writer: w,
                // Everything of theirs this replica holds stays; nothing later counts.
                cut: self.log.vv().get(&w),
            },
        })
    }

    /// Applies the access edits an owner's delta carries, dropping what they invalidate.
    pub(super) fn apply_acl(&mut self, d: &SignedDelta) {
        if self.acl.owner() != Some(d.author) {
            return;
        }
        for op in &d.acl {
            if let Some((writer, cut)) = self.acl.apply(op) {
                self.truncate(writer, cut);
            }
        }
    }

    /// Drops `writer`'s deltas past `cut` everywhere this replica holds them (log, buffer,
    /// unacknowledged own writes, disk) and rebuilds the document without them.
    pub(super) fn truncate(&mut self, writer: ActorId, cut: u64) {
        let mut dropped = self.log.truncate_after(&writer, cut);
        let doomed: Vec<(ActorId, u64)> = self
            .pending
            .iter()
            .filter(|((a, _), h)| *a == writer && h.delta.seqs.last > cut)
            .map(|(k, _)| *k)
            .collect();
        for key in doomed {
            self.unhold(&key);
        }
        if writer == self.actor {
            self.folds_cut(cut);
            let refused: Vec<u64> = self
                .unacked
                .iter()
                .filter(|u| u.delta.seqs.last > cut)
                .map(|u| u.tag)
                .collect();
            self.unacked.retain(|u| u.delta.seqs.last <= cut);
            dropped |= !refused.is_empty();
            for tag in refused {
                self.event(Event::Refused { tag });
            }
        }
        if !dropped {
            return;
        }
        let mut doc = Doc::new(self.doc.id());
        for d in self.log.iter() {
            doc.apply(&d.delta);
        }
        for u in &self.unacked {
            doc.apply(&u.delta.delta);
        }
        self.doc = doc;
        self.outputs.push_back(Output::Truncate {
            author: writer,
            after: cut,
        });
        self.event(Event::Truncated {
            author: writer,
            after: cut,
        });
    }
}
