//! Compaction: history that does not grow for ever.
//!
//! Every replica remembers, per peer replica of the document, the version vector that
//! peer last said it holds (its summaries in anti-entropy) and when. The *stable cut* is
//! the pointwise minimum of this replica's own vector and those of every peer heard from
//! within [`Config::compaction_horizon_ms`]: writes at or below it are held by every
//! replica known here. A peer unheard of for longer stops holding the cut back.
//!
//! A replica compacts only its own writes, and only by re-signing them, so every delta
//! anywhere is still signed by its author and checked as before ([`crate::sync::funnel`]):
//! it folds its own entries into fewer, larger ones, and leaves out of each fold the
//! values of its own that are dead in the state at the stable cut (overwritten, deleted
//! or removed by a write every known replica holds). The fold keeps the context of what
//! it covers, so on any replica joining it removes exactly those values, which the write
//! that killed them removes anyway: the final state is the same as without compaction.
//! What replicas hold of an author, its *checkpoint*, is then its folds up to the stable
//! cut plus its newer writes; a replica that was away, or a new one, catches up from them
//! by ordinary anti-entropy.
//!
//! A fold is persisted before it enters the log, is served or is broadcast, so whatever
//! version of an author's history any replica holds is one that author's disk held too:
//! its later folds, made of whole entries of its log, nest with it (never overlap it
//! partly, which would be evidence of equivocation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Replica;
use crate::ctx::CausalContext;
use crate::doc::Delta;
use crate::id::ActorId;
use crate::store::{Causal, DotStore};
use crate::sync::interface::{Output, SyncError};
use crate::sync::message::{Message, SeqRange, SignedDelta};
use crate::vv::VersionVector;

/// Peer replicas remembered per document; past this, the least recently heard is
/// forgotten (it then no longer holds the cut back).
pub const MAX_ACKS: usize = 1_024;
/// The log growth, in entries since the last compaction, that makes one due at once.
const DUE_AFTER_ENTRIES: usize = 1_024;
/// Folds made by one compaction, at most.
const MAX_FOLDS: usize = 64;

/// What a peer replica last said it holds, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub vv: VersionVector,
    /// The driver's clock (milliseconds) when it was heard.
    pub heard_ms: u64,
}

/// One of this replica's folds on its way to disk.
#[derive(Debug)]
pub(super) struct Folding {
    ticket: u64,
    delta: SignedDelta,
    size: usize,
}

/// Compaction's bookkeeping in a replica.
#[derive(Debug, Default)]
pub(super) struct Compaction {
    acks: BTreeMap<ActorId, Ack>,
    /// Bumped whenever an ack changes in a way worth persisting.
    acks_version: u64,
    /// Folds made and not yet durable, in ticket order.
    folding: Vec<Folding>,
    /// The log's length and the stable cut when compaction last ran.
    last_len: usize,
    last_cut: Option<VersionVector>,
}

/// A run of entries to fold and the values to leave out of it.
type Group<'a> = (Vec<&'a SignedDelta>, CausalContext);

/// Ends the run being gathered: it becomes a fold if that changes anything (two entries
/// or more, or values to leave out).
fn flush<'a>(
    group: &mut Vec<&'a SignedDelta>,
    dead: &mut CausalContext,
    groups: &mut Vec<Group<'a>>,
) {
    if group.len() >= 2 || !dead.is_empty() {
        groups.push((std::mem::take(group), std::mem::take(dead)));
    }
    group.clear();
    *dead = CausalContext::new();
}

/// Dots of `store` that `keep` lacks, as a context.
fn dead_dots(store: &crate::map::Map, keep: &CausalContext) -> CausalContext {
    let mut dead = CausalContext::new();
    store.for_each_dot(&mut |d| {
        if !keep.contains(d) {
            dead.insert(*d);
        }
    });
    dead
}

impl Replica {
    /// Notes what peer `from` says it holds (its summary's version vector).
    pub(super) fn note_ack(&mut self, from: ActorId, vv: &crate::vv::VersionVector) {
        let now = self.now_ms;
        let c = &mut self.compaction;
        match c.acks.get_mut(&from) {
            Some(ack) => {
                // Persisting every summary's time would write for ever: an hour is fine
                // against a horizon of days.
                if ack.vv != *vv || now >= ack.heard_ms.saturating_add(3_600_000) {
                    c.acks_version += 1;
                }
                ack.vv = vv.clone();
                ack.heard_ms = ack.heard_ms.max(now);
            }
            None => {
                if c.acks.len() >= MAX_ACKS {
                    let oldest = c
                        .acks
                        .iter()
                        .min_by_key(|(_, a)| a.heard_ms)
                        .map(|(k, _)| *k);
                    if let Some(k) = oldest {
                        c.acks.remove(&k);
                    }
                }
                c.acks.insert(
                    from,
                    Ack {
                        vv: vv.clone(),
                        heard_ms: now,
                    },
                );
                c.acks_version += 1;
            }
        }
    }

    /// The peer replicas remembered, with what each last said it holds.
    pub fn acks(&self) -> impl Iterator<Item = (&ActorId, &Ack)> {
        self.compaction.acks.iter()
    }

    /// Changes whenever [`Replica::acks`] changed in a way worth persisting.
    pub fn acks_version(&self) -> u64 {
        self.compaction.acks_version
    }

    /// The same replica, remembering peer replicas from an earlier run.
    pub fn with_acks(mut self, acks: impl IntoIterator<Item = (ActorId, Ack)>) -> Self {
        for (peer, ack) in acks {
            if peer != self.actor && self.compaction.acks.len() < MAX_ACKS {
                self.compaction.acks.insert(peer, ack);
            }
        }
        self
    }

    /// Writes every replica known here holds: this replica's own vector, lowered to each
    /// peer's heard within the horizon.
    pub fn stable_cut(&self) -> VersionVector {
        let mut cut = self.log.vv().clone();
        let horizon = self.config.compaction_horizon_ms;
        for ack in self.compaction.acks.values() {
            if self.now_ms.saturating_sub(ack.heard_ms) > horizon {
                continue;
            }
            let lowered: Vec<(ActorId, u64)> = cut
                .iter()
                .filter(|(a, n)| ack.vv.get(a) < **n)
                .map(|(a, _)| (*a, ack.vv.get(a)))
                .collect();
            for (a, n) in lowered {
                cut.retreat(a, n);
            }
        }
        cut
    }

    /// True if compaction has work worth doing now: the log grew by
    /// [`DUE_AFTER_ENTRIES`] since it last ran.
    pub fn compaction_due(&self) -> bool {
        self.log.len() >= self.compaction.last_len + DUE_AFTER_ENTRIES
    }

    /// Bytes of the deltas held.
    pub fn log_bytes(&self) -> usize {
        self.log.bytes()
    }

    /// Folds this replica's own durable entries, leaving out its values dead at the
    /// stable cut (see the module). Each fold is persisted, then logged and broadcast.
    /// Does nothing while catching up, while earlier folds are still on their way to
    /// disk, or when neither the log nor the cut moved since the last run.
    pub(super) fn compact(&mut self) -> Result<(), SyncError> {
        if self.catching_up || !self.compaction.folding.is_empty() {
            return Ok(());
        }
        let cut = self.stable_cut();
        if self.log.len() == self.compaction.last_len
            && self.compaction.last_cut.as_ref() == Some(&cut)
        {
            return Ok(());
        }
        self.compaction.last_len = self.log.len();
        self.compaction.last_cut = Some(cut.clone());
        let own = self.log.entries_of(&self.actor);
        if own.is_empty() {
            return Ok(());
        }
        // This replica's values live at the stable cut; only entries within it are judged
        // against them (newer ones of its own may be what killed an older value, which
        // the fold's join drops anyway).
        let upto = cut.get(&self.actor);
        let live = if own[0].0.seqs.last <= upto {
            Some(self.log.state_within(&cut).store.dots())
        } else {
            None
        };
        let budget = self.config.max_delta_bytes / 2;
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut group: Vec<&SignedDelta> = Vec::new();
        let mut dead = CausalContext::new();
        let mut group_bytes = 0usize;
        for (d, size) in own {
            let gone = match &live {
                Some(live) if d.seqs.last <= upto => dead_dots(&d.delta.store, live),
                _ => CausalContext::new(),
            };
            // What the entry weighs once its dead values are left out.
            let weight = if gone.is_empty() {
                size
            } else {
                let mut pruned = (*d.delta).clone();
                pruned.join_exact(&Causal {
                    store: Default::default(),
                    ctx: gone.clone(),
                });
                crate::codec::encode(&pruned).len() + 256
            };
            if gone.is_empty() && weight >= budget / 4 {
                // Settled: large, nothing to drop. Left alone, and a boundary.
                flush(&mut group, &mut dead, &mut groups);
                group_bytes = 0;
                continue;
            }
            if !group.is_empty() && group_bytes + weight > budget {
                flush(&mut group, &mut dead, &mut groups);
                group_bytes = 0;
            }
            group.push(d);
            dead.union(&gone);
            group_bytes += weight;
            if groups.len() >= MAX_FOLDS {
                break;
            }
        }
        flush(&mut group, &mut dead, &mut groups);
        let folds: Vec<SignedDelta> = groups
            .into_iter()
            .take(MAX_FOLDS)
            .map(|(run, dead)| self.fold(&run, &dead))
            .collect();
        for fold in folds {
            let size = fold.signing_bytes().len() + fold.signature.len();
            if size > self.config.max_delta_bytes {
                continue;
            }
            let ticket = self.ticket();
            self.outputs.push_back(Output::Persist {
                ticket,
                delta: fold.clone(),
            });
            self.compaction.folding.push(Folding {
                ticket,
                delta: fold,
                size,
            });
        }
        Ok(())
    }

    /// One signed fold of `run` (consecutive entries of this replica's own), without the
    /// values in `dead`.
    fn fold(&self, run: &[&SignedDelta], dead: &CausalContext) -> SignedDelta {
        let mut folded = Delta::default();
        let mut acl = Vec::new();
        for d in run {
            folded.join_with(&d.delta);
            acl.extend_from_slice(&d.acl);
        }
        if !dead.is_empty() {
            folded.join_exact(&Causal {
                store: Default::default(),
                ctx: dead.clone(),
            });
        }
        let first = run.first().map_or(0, |d| d.seqs.first);
        let last = run.last().map_or(0, |d| d.seqs.last);
        let hlc = run.iter().map(|d| d.hlc).max().unwrap_or_default();
        self.sign(SeqRange { first, last }, hlc, folded, acl)
    }

    /// Folds durable up to `ticket` enter the log and go out to every replica.
    pub(super) fn folds_persisted(&mut self, ticket: u64) {
        let done = self
            .compaction
            .folding
            .iter()
            .take_while(|f| f.ticket <= ticket)
            .count();
        let landed: Vec<Folding> = self.compaction.folding.drain(..done).collect();
        for f in landed {
            // Writes of ours past the fold may have been cut meanwhile (a removal): the
            // fold itself is then gone too.
            if f.delta.seqs.last > self.log.vv().get(&self.actor) {
                continue;
            }
            self.log.insert(f.delta.clone(), f.size);
            self.stats.folded += 1;
            self.outputs
                .push_back(Output::Broadcast(Message::Delta(f.delta)));
        }
        self.compaction.last_len = self.compaction.last_len.min(self.log.len());
    }

    /// A persist failed: folds on their way are dropped (the entries they would replace
    /// stay, and a later compaction makes them again).
    pub(super) fn folds_failed(&mut self) {
        self.compaction.folding.clear();
        self.compaction.last_cut = None;
    }
}
