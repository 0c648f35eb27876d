//! The one way into a replica for a peer's deltas.
//!
//! Every delta from the network passes the same checks in the same order, cheapest first,
//! so a hostile peer pays more for each check it passes than the replica does:
//!
//! 1. shape, on the delta alone ([`check_shape`]): document, sequence range within
//!    [`super::message::MAX_SEQ`], access edits that could be valid, the delta's structure
//!    ([`crate::check::check_structure`]: no foreign, repeated or uncovered dots), size;
//! 2. what the replica already knows, by lookups: duplicates, how far ahead the sequence
//!    is, whether the author may write at all;
//! 3. the author's signature, which costs a hash of the whole delta and a curve check;
//! 4. the rules against the current state ([`crate::Doc::validate_delta`]), then the join.
//!
//! Stages 1 and 3 need no state: a driver may run them away from the replica, on another
//! thread, through [`verify`], and hand the replica a [`Verified`] message, which then
//! skips them. Stages 2 and 4 run inside [`super::Replica`].

use super::interface::SyncError;
use super::message::{Authenticator, Message, SignedDelta};
use super::AclOp;
use crate::check::check_structure;
use crate::id::DocId;

/// A message whose deltas all passed [`check_shape`] and their authors' signatures.
/// Only [`verify`] makes one.
#[derive(Clone, Debug)]
pub struct Verified(Message);

impl Verified {
    pub fn message(&self) -> &Message {
        &self.0
    }

    pub fn into_message(self) -> Message {
        self.0
    }
}

/// Stage 1 for one delta of document `doc`: everything that can be judged on the delta
/// alone. Returns the bytes its author signed, for stage 3.
pub fn check_shape(
    doc: DocId,
    d: &SignedDelta,
    max_delta_bytes: usize,
) -> Result<Vec<u8>, SyncError> {
    if d.doc != doc {
        return Err(SyncError::WrongDoc {
            expected: doc,
            got: d.doc,
        });
    }
    if !d.seqs.is_valid() {
        return Err(SyncError::BadSeqRange {
            first: d.seqs.first,
            last: d.seqs.last,
        });
    }
    // Only the owner may carry access edits (checked against the genesis later), and an
    // owner cutting itself would cut the very delta that says so.
    if d.acl
        .iter()
        .any(|op| matches!(op, AclOp::Remove { writer, .. } if *writer == d.author))
    {
        return Err(SyncError::OwnerRemoval);
    }
    check_structure(&d.author, &d.delta).map_err(|source| SyncError::Doc {
        author: d.author,
        source,
    })?;
    let bytes = d.signing_bytes();
    let size = bytes.len().saturating_add(d.signature.len());
    if size > max_delta_bytes {
        return Err(SyncError::DeltaTooLarge {
            size,
            max: max_delta_bytes,
        });
    }
    Ok(bytes)
}

/// Stages 1 and 3 for a whole message: every delta's shape, then its signature. Stops at
/// the first delta that fails: an honest peer never sends one.
pub fn verify(
    msg: Message,
    auth: &dyn Authenticator,
    max_delta_bytes: usize,
) -> Result<Verified, SyncError> {
    let doc = msg.doc();
    for d in msg.deltas() {
        let bytes = check_shape(doc, d, max_delta_bytes)?;
        if !auth.verify(&d.author, &bytes, &d.signature) {
            return Err(SyncError::BadSignature {
                author: d.author,
                first: d.seqs.first,
                last: d.seqs.last,
            });
        }
    }
    Ok(Verified(msg))
}
