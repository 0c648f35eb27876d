//! Catching an author that signs two versions of the same writes, and making every
//! replica agree on what to do about it.
//!
//! An honest author signs each sequence number once, and its folds (re-signed runs of its
//! own deltas) always contain what they replace. Two validly signed deltas of one author
//! that break this — same range but different signatures (unless one is the other
//! compacted: fewer values, a larger context), overlapping ranges where neither covers
//! the other, or a fold that does not contain a delta it covers — are
//! *evidence*: anyone can check it, and it proves the author misbehaved.
//!
//! Without a rule, replicas that got different versions would keep different states for
//! good (their version vectors agree, so anti-entropy sends nothing). The rule: the author
//! is cut entirely, as if the owner had removed it before its first write: every delta of
//! it is dropped everywhere and refused from then on. That depends on nothing but the fact
//! of the evidence, so every replica ends in the same state once the evidence has spread:
//! by gossip when caught, in answer to the author's deltas (at most every
//! [`EVIDENCE_EVERY_MS`] per peer), and in anti-entropy to any peer that still holds the
//! author's writes. Version-vector summaries carry a hash chained over each author's
//! entries, and replicas whose chains differ at the same version list their entries to
//! each other ([`Message::Entries`]), so two versions with equal vectors still meet.
//!
//! A ban lives in memory: after a restart it is learned again from the first peer that
//! holds the evidence. Evidence is kept only against authors whose writes were held here,
//! and at most [`MAX_EVIDENCE_BYTES`] of it; past that a ban is kept without its proof.

use std::collections::BTreeMap;

use super::Replica;
use crate::id::ActorId;
use crate::sync::funnel::check_shape;
use crate::sync::interface::{Event, Output, SyncError};
use crate::sync::log::{contained, resigned};
use crate::sync::message::{Message, SeqRange, SignedDelta};
use crate::vv::VersionVector;

/// Authors listed in answer to one summary whose chains differ from ours.
const MAX_LISTINGS: usize = 16;
/// Evidence against one author is sent to one peer at most this often.
pub(super) const EVIDENCE_EVERY_MS: u64 = 30_000;
/// Bytes of evidence kept per document (for passing on).
pub(super) const MAX_EVIDENCE_BYTES: usize = 8 << 20;
/// (peer, author) pairs whose last evidence send is remembered.
const MAX_SENT: usize = 4_096;

/// An author caught equivocating.
#[derive(Clone, Debug, Default)]
pub(super) struct Ban {
    /// The two deltas that prove it, unless [`MAX_EVIDENCE_BYTES`] were kept already.
    evidence: Option<([SignedDelta; 2], usize)>,
}

/// The bans of one replica, and when evidence was last sent to whom.
#[derive(Debug, Default)]
pub(super) struct Bans {
    by_author: BTreeMap<ActorId, Ban>,
    evidence_bytes: usize,
    sent: BTreeMap<(ActorId, ActorId), u64>,
}

/// A held entry that the fold `d` does not contain, if any. An honest author folds what
/// its own log holds, which (unless it lost its store) is at least as compacted as
/// anything it sent: joining a
/// covered entry into its fold changes nothing. A fold holding a value a covered entry
/// left out or removed would bring it back on replicas that get only the fold, and not
/// on those that joined the entry: the states would part for good.
pub(super) fn inconsistent(d: &SignedDelta, covered: &[SignedDelta]) -> Option<SignedDelta> {
    let mut all = (*d.delta).clone();
    for c in covered {
        all.join_exact(&c.delta);
    }
    if all == *d.delta {
        return None;
    }
    covered
        .iter()
        .find(|c| !contained(&c.delta, &d.delta))
        .cloned()
}

/// True if two deltas of one author give different versions of the same writes.
fn conflict(a: &SignedDelta, b: &SignedDelta) -> Result<bool, SyncError> {
    if a.author != b.author {
        return Err(SyncError::BadEvidence("the deltas have different authors"));
    }
    if a.seqs.last < b.seqs.first || b.seqs.last < a.seqs.first {
        return Err(SyncError::BadEvidence("the deltas cover different writes"));
    }
    Ok(if a.seqs == b.seqs {
        // Re-signing the same writes without values dead everywhere is compaction, not
        // equivocation: one version must be the other less some values, with the same
        // access edits and the same context or one grown by dots dead everywhere.
        a != b
            && (a.acl != b.acl || !(resigned(&a.delta, &b.delta) || resigned(&b.delta, &a.delta)))
    } else if a.seqs.covers(&b.seqs) {
        !contained(&b.delta, &a.delta)
    } else if b.seqs.covers(&a.seqs) {
        !contained(&a.delta, &b.delta)
    } else {
        true
    })
}

impl Replica {
    /// True if `author` was caught equivocating: every delta of it is dropped.
    pub(super) fn banned(&self, author: &ActorId) -> bool {
        self.bans.by_author.contains_key(author)
    }

    /// True if `actor` was cut here: caught equivocating, or removed from the writers.
    /// Dots of it past the cut never arrive, so a context may cover them.
    pub(super) fn is_cut(&self, actor: &ActorId) -> bool {
        self.banned(actor) || self.acl.is_removed(actor)
    }

    /// Two deltas of one author, `held` here and `new` (both verified), disagree: cut the
    /// author entirely, and tell everyone.
    pub(super) fn caught(&mut self, held: SignedDelta, new: SignedDelta) {
        let author = new.author;
        if self.banned(&author) {
            return;
        }
        let size = held.signing_bytes().len() + new.signing_bytes().len();
        let keep = self.bans.evidence_bytes.saturating_add(size) <= MAX_EVIDENCE_BYTES;
        let evidence = keep.then(|| ([held.clone(), new.clone()], size));
        if keep {
            self.bans.evidence_bytes += size;
        }
        self.bans.by_author.insert(author, Ban { evidence });
        self.stats.equivocations += 1;
        self.event(Event::Equivocated { author, cut: 0 });
        self.truncate(author, 0);
        self.outputs.push_back(Output::Broadcast(Message::Evidence {
            doc: self.doc.id(),
            deltas: vec![held, new],
        }));
    }

    /// Sends `to` the evidence against `author`, if banned here and not sent to it within
    /// [`EVIDENCE_EVERY_MS`].
    pub(super) fn send_evidence(&mut self, now_ms: u64, to: ActorId, author: &ActorId) {
        let Some(Ban {
            evidence: Some((pair, _)),
        }) = self.bans.by_author.get(author)
        else {
            return;
        };
        if to == self.actor {
            return;
        }
        let key = (to, *author);
        if let Some(at) = self.bans.sent.get(&key) {
            if now_ms < at.saturating_add(EVIDENCE_EVERY_MS) {
                return;
            }
        }
        let msg = Message::Evidence {
            doc: self.doc.id(),
            deltas: pair.to_vec(),
        };
        if self.bans.sent.len() >= MAX_SENT {
            self.bans
                .sent
                .retain(|_, at| now_ms < at.saturating_add(EVIDENCE_EVERY_MS));
        }
        if self.bans.sent.len() < MAX_SENT {
            self.bans.sent.insert(key, now_ms);
        }
        self.outputs.push_back(Output::Send { to, msg });
    }

    /// Checks evidence from a peer and, if it proves equivocation, acts on it.
    pub(super) fn on_evidence(
        &mut self,
        deltas: Vec<SignedDelta>,
        verified: bool,
    ) -> Result<(), SyncError> {
        let Ok([a, b]) = <[SignedDelta; 2]>::try_from(deltas) else {
            return Err(SyncError::BadEvidence("evidence is two deltas"));
        };
        if self.banned(&a.author) {
            return Ok(());
        }
        // Evidence against an author none of whose writes are held here changes nothing
        // here; keeping it would let anyone fill memory with throwaway keys.
        if self.log.vv().get(&a.author) == 0 {
            return Ok(());
        }
        if !conflict(&a, &b)? {
            return Err(SyncError::BadEvidence("the two deltas agree"));
        }
        if !verified {
            for d in [&a, &b] {
                let bytes = check_shape(self.doc.id(), d, self.config.max_delta_bytes)?;
                if !self.auth.verify(&d.author, &bytes, &d.signature) {
                    return Err(SyncError::BadSignature {
                        author: d.author,
                        first: d.seqs.first,
                        last: d.seqs.last,
                    });
                }
            }
        }
        self.caught(a, b);
        Ok(())
    }

    /// What a peer's summary tells about equivocation: evidence it lacks (it holds writes
    /// past a cut), and authors whose entries differ from ours at the same version, for
    /// which we list ours so the peer sends what we lack.
    pub(super) fn compare_chains(
        &mut self,
        now_ms: u64,
        from: ActorId,
        vv: &VersionVector,
        chains: &[(ActorId, [u8; 16])],
    ) {
        let behind: Vec<ActorId> = self
            .bans
            .by_author
            .keys()
            .filter(|a| vv.get(a) > 0)
            .copied()
            .collect();
        for a in behind {
            self.send_evidence(now_ms, from, &a);
        }
        let mine = self.log.vv();
        let differ: Vec<ActorId> = chains
            .iter()
            .filter(|(a, chain)| {
                vv.get(a) == mine.get(a) && self.log.chain(a).is_some_and(|c| c != *chain)
            })
            .map(|(a, _)| *a)
            .take(MAX_LISTINGS)
            .collect();
        for author in differ {
            let msg = Message::Entries {
                doc: self.doc.id(),
                author,
                entries: self.log.listing(&author),
            };
            self.outputs.push_back(Output::Send { to: from, msg });
        }
    }

    /// A peer listed its entries of `author`: send it ours that it lacks (a fold it has not
    /// seen, or another version of a write, which it will catch).
    pub(super) fn answer_listing(
        &mut self,
        from: ActorId,
        author: &ActorId,
        listing: &[(SeqRange, u64)],
    ) {
        let deltas = self.log.unlisted(
            author,
            listing,
            self.config.max_batch_deltas,
            self.config.max_batch_bytes,
        );
        self.send_deltas(from, deltas, false);
        // The peer holds a version of this author's writes that this replica neither
        // holds nor covers (a fold it has not seen): list ours back, so the peer sends it.
        // Its answer lists nothing new to it, so this ends.
        if self.log.lacks_listed(author, listing) {
            let msg = Message::Entries {
                doc: self.doc.id(),
                author: *author,
                entries: self.log.listing(author),
            };
            self.outputs.push_back(Output::Send { to: from, msg });
        }
    }
}
