//! What a replica can say about itself for people watching the network: how many known
//! writes it still lacks ([`Replica::behind`], from peers' claims it keeps with
//! [`Replica::note_claims`]), and a cut at a hybrid-clock time for consistent snapshots
//! ([`Replica::cut`]).

use std::sync::Arc;

use super::{Replica, MAX_UNHEARD_AUTHORS};
use crate::clock::Timestamp;
use crate::doc::{Delta, Doc};
use crate::id::{ActorId, DocId};
use crate::sync::interface::SyncError;
use crate::sync::message::SignedDelta;
use crate::vv::VersionVector;

/// What a replica held at a cut ([`Replica::cut`]).
#[derive(Clone, Debug)]
pub struct Cut {
    /// For each author, its writes in the cut: 1 to this.
    pub vv: VersionVector,
    /// Those writes' deltas.
    pub deltas: Vec<Arc<Delta>>,
    /// A fold of an author's writes held here spans the cut: its writes before the cut
    /// are left out (they cannot be separated from the rest).
    pub straddled: bool,
    /// The cut holds everything this replica holds (its document is the cut's).
    pub everything: bool,
}

impl Cut {
    /// The digest ([`Doc::digest`]) of document `id` holding exactly the cut's writes.
    pub fn digest(&self, id: DocId) -> [u8; 32] {
        let mut doc = Doc::new(id);
        for d in &self.deltas {
            doc.apply(d);
        }
        doc.digest()
    }
}

impl Replica {
    /// Writes this replica knows of but has not applied: per author (not cut), the most
    /// that a connected peer's latest summary claims or a held-back delta shows, past what
    /// is applied here. Claims are capped ([`Replica::note_claims`]), and a peer's go when
    /// it leaves, so a liar can inflate the figure by a bounded amount while connected,
    /// never for ever. For people; never acted on.
    pub fn behind(&self) -> u64 {
        let vv = self.log.vv();
        let mut known = VersionVector::default();
        for claims in self.claims.values() {
            known.join(claims);
        }
        for held in self.pending.values() {
            let d = &held.delta;
            let cap = vv.get(&d.author).saturating_add(self.config.max_seq_lead);
            known.advance(d.author, d.seqs.last.min(cap));
        }
        known
            .iter()
            .filter(|(a, _)| !self.banned(a))
            .map(|(a, k)| self.permitted_up_to(a, *k).saturating_sub(vv.get(a)))
            .fold(0u64, u64::saturating_add)
    }

    /// The most of `author`'s writes, up to `n`, that this document accepts: a removed
    /// writer's up to its cut.
    fn permitted_up_to(&self, author: &ActorId, n: u64) -> u64 {
        if self.acl.permits(author, n) {
            return n;
        }
        // Removed (or never a writer): find the cut by halving; at most 64 steps.
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.acl.permits(author, mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Keeps `peer`'s summary `vv` as its claims: authors this document permits, each at
    /// most [`crate::sync::Config::max_seq_lead`] past what is applied here (as deltas themselves are
    /// limited), and at most [`MAX_UNHEARD_AUTHORS`] authors with nothing applied here.
    pub(super) fn note_claims(&mut self, peer: ActorId, vv: &VersionVector) {
        if !self.peers.contains(&peer) {
            return;
        }
        let mine = self.log.vv();
        let mut claims = VersionVector::default();
        let mut unheard = 0;
        for (author, n) in vv.iter() {
            let have = mine.get(author);
            if *n <= have || !self.acl.permits(author, have + 1) {
                continue;
            }
            if have == 0 {
                if unheard == MAX_UNHEARD_AUTHORS {
                    continue;
                }
                unheard += 1;
            }
            claims.advance(
                *author,
                (*n).min(have.saturating_add(self.config.max_seq_lead)),
            );
        }
        self.claims.insert(peer, claims);
    }

    /// A cut at hybrid-clock time `at_ms` (a consistent snapshot, as Chandy and Lamport's
    /// marker gives): first this replica's clock passes `at_ms`, so none of its writes
    /// from now on falls before the cut; then what it holds written at or before
    /// `at_ms` — for each author a prefix of its writes, since an author's clock only
    /// grows — is the cut. Hybrid clocks order causes before effects, so the writes at or
    /// before `at_ms` everywhere are closed under causality: a write in the cut has its
    /// causes in the cut (here, or still on their way here). Fails if `at_ms` is further
    /// ahead of `now_ms` than the clock drift allowed.
    pub fn cut(&mut self, at_ms: u64, now_ms: u64) -> Result<Cut, SyncError> {
        let marker = Timestamp {
            millis: at_ms.saturating_add(1),
            logical: 0,
        };
        self.clock.observe(marker, now_ms)?;
        let mut held: Vec<&SignedDelta> = self.log.iter().collect();
        held.sort_by_key(|d| (d.author, d.seqs.first));
        let mut cut = Cut {
            vv: VersionVector::default(),
            deltas: Vec::new(),
            straddled: false,
            everything: true,
        };
        // This replica's writes not yet durable are written (and will be sent with the
        // clocks they have): they count, after its durable ones.
        held.extend(self.unacked.iter().map(|u| &u.delta));
        for d in held {
            let next = cut.vv.get(&d.author) + 1;
            if d.seqs.first != next {
                cut.everything = false;
                continue;
            }
            cut.everything &= d.hlc.millis <= at_ms;
            if d.hlc.millis <= at_ms {
                cut.vv.advance(d.author, d.seqs.last);
                cut.deltas.push(d.delta.clone());
            } else if d.seqs.first < d.seqs.last {
                // A fold carries its newest write's clock: older writes in it may have
                // come before the cut, and cannot be told apart here.
                cut.straddled = true;
            }
        }
        Ok(cut)
    }
}
