//! Who may write a document: its [`Genesis`] (fixed at creation, committed to by the doc
//! id) and its [`Acl`], which the owner edits through [`AclOp`]s carried in the owner's own
//! signed deltas.
//!
//! Convergence: every replica applies the owner's deltas in the owner's sequence order, so
//! every replica computes the same ACL from the same owner deltas, whatever order the rest
//! arrived in. A writer's delta is judged against that ACL: removing a writer records a
//! *cut*, the last of the writer's sequence numbers the owner held when removing it. The
//! writer's deltas up to the cut stay valid everywhere; later ones are invalid everywhere,
//! and a replica that had already applied some drops them and rebuilds. Removal is
//! permanent: re-adding a removed writer is refused, because a replica that never saw the
//! removal could not tell the dropped deltas from new ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::id::{ActorId, DocId};

/// What a document is at birth. Its hash is the document id, so a replica that joins can
/// check what a peer tells it about the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub owner: ActorId,
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
    /// Open documents accept writes from anyone.
    pub open: bool,
    /// Writers besides the owner, for closed documents.
    pub writers: Vec<ActorId>,
}

impl Genesis {
    pub fn id(&self) -> DocId {
        let bytes = codec::encode(&("lattice genesis v1", self));
        DocId(*blake3::hash(&bytes).as_bytes())
    }
}

/// An edit of the ACL, as the owner's delta carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclOp {
    Add(ActorId),
    /// Deltas of `writer` beyond sequence number `cut` are invalid from now on, everywhere.
    Remove {
        writer: ActorId,
        cut: u64,
    },
}

/// An edit the owner asks for; the replica turns it into an [`AclOp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclChange {
    Add(ActorId),
    Remove(ActorId),
}

/// Whether a writer may write, and up to where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Standing {
    Writer,
    Removed { cut: u64 },
}

/// The current access rules of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    owner: Option<ActorId>,
    open: bool,
    writers: BTreeMap<ActorId, Standing>,
}

impl Acl {
    /// Anyone may write; nobody owns the rules.
    pub fn open() -> Self {
        Acl {
            owner: None,
            open: true,
            writers: BTreeMap::new(),
        }
    }

    pub fn from_genesis(g: &Genesis) -> Self {
        Acl {
            owner: Some(g.owner),
            open: g.open,
            writers: g.writers.iter().map(|w| (*w, Standing::Writer)).collect(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn owner(&self) -> Option<ActorId> {
        self.owner
    }

    pub fn writers(&self) -> impl Iterator<Item = (&ActorId, &Standing)> {
        self.writers.iter()
    }

    /// True if `writer` was removed (its deltas past a cut are invalid).
    pub fn is_removed(&self, writer: &ActorId) -> bool {
        matches!(self.writers.get(writer), Some(Standing::Removed { .. }))
    }

    /// True if `author` may write now (a new write at its next sequence number).
    pub fn may_write(&self, author: &ActorId) -> bool {
        self.open
            || self.owner == Some(*author)
            || self.writers.get(author) == Some(&Standing::Writer)
    }

    /// True if a delta by `author` ending at sequence number `last` is valid.
    pub fn permits(&self, author: &ActorId, last: u64) -> bool {
        if self.open || self.owner == Some(*author) {
            return true;
        }
        match self.writers.get(author) {
            Some(Standing::Writer) => true,
            Some(Standing::Removed { cut }) => last <= *cut,
            None => false,
        }
    }

    /// Applies one of the owner's edits; returns `(writer, cut)` when a writer's deltas
    /// beyond `cut` must now be dropped. Idempotent, so replaying a fold is harmless.
    pub fn apply(&mut self, op: &AclOp) -> Option<(ActorId, u64)> {
        match *op {
            AclOp::Add(w) => {
                self.writers.entry(w).or_insert(Standing::Writer);
                None
            }
            // The owner is never cut: the funnel refuses such a delta, and this keeps a
            // stored one (written before that rule) harmless.
            AclOp::Remove { writer, .. } if self.owner == Some(writer) => None,
            AclOp::Remove { writer, cut } => match self.writers.get(&writer) {
                Some(Standing::Removed { cut }) => Some((writer, *cut)),
                _ => {
                    self.writers.insert(writer, Standing::Removed { cut });
                    Some((writer, cut))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesis(open: bool) -> Genesis {
        Genesis {
            owner: ActorId::from_index(1),
            name: "g".into(),
            nonce: [3; 16],
            open,
            writers: vec![ActorId::from_index(2)],
        }
    }

    #[test]
    fn the_id_commits_to_every_field() {
        let g = genesis(false);
        let mut open = g.clone();
        open.open = true;
        let mut more = g.clone();
        more.writers.push(ActorId::from_index(3));
        assert_ne!(g.id(), open.id());
        assert_ne!(g.id(), more.id());
        assert_eq!(g.id(), genesis(false).id());
    }

    #[test]
    fn removal_cuts_a_writer_and_is_permanent() {
        let (owner, w, stranger) = (
            ActorId::from_index(1),
            ActorId::from_index(2),
            ActorId::from_index(9),
        );
        let mut acl = Acl::from_genesis(&genesis(false));
        assert!(acl.may_write(&owner) && acl.may_write(&w) && !acl.may_write(&stranger));
        assert!(!acl.permits(&stranger, 1));
        assert_eq!(
            acl.apply(&AclOp::Remove { writer: w, cut: 4 }),
            Some((w, 4))
        );
        assert!(acl.permits(&w, 4) && !acl.permits(&w, 5) && !acl.may_write(&w));
        acl.apply(&AclOp::Add(w));
        acl.apply(&AclOp::Remove { writer: w, cut: 9 });
        assert!(!acl.permits(&w, 5), "the first cut stands");
        acl.apply(&AclOp::Add(stranger));
        assert!(acl.may_write(&stranger));
    }

    #[test]
    fn open_documents_admit_anyone() {
        let acl = Acl::from_genesis(&genesis(true));
        assert!(acl.permits(&ActorId::from_index(9), 100));
        assert!(Acl::open().may_write(&ActorId::from_index(9)));
    }
}
