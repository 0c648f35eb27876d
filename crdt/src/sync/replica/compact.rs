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
//! Where the context's ranges of another writer are split only by that writer's dots dead
//! at the stable cut, the fold covers those too, which again removes nothing the stable
//! writes do not: its context stays a few ranges per writer however many overwrites it
//! names.
//! What replicas hold of an author, its *checkpoint*, is then its folds up to the stable
//! cut plus its newer writes; a replica that was away, or a new one, catches up from them
//! by ordinary anti-entropy.
//!
//! Folds never overlap partly (which would be evidence of equivocation), whatever the
//! author's history, crashes or lost stores: every fold covers an *aligned block* of
//! sequence numbers, `[k * 2^j + 1, (k + 1) * 2^j]`, and any two such blocks nest or are
//! disjoint. A fold is persisted before it enters the log, is served or is broadcast; one
//! whose commit failed (or never answered) is persisted again, byte for byte, rather
//! than made anew. Writes younger than [`MIN_AGE_MS`] are not folded, so a snapshot of
//! the present (`Replica::cut`) finds them as written.
//!
//! In a closed document the owner's replica holds the cut back whatever the horizon: the
//! owner removes a writer at what the owner holds of it, so a value left out because that
//! writer overwrote it can never come back by the writer's removal.

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
/// Writes younger than this (by their hybrid clock) are not folded yet.
pub const MIN_AGE_MS: u64 = 5_000;
/// A fold whose commit has not answered in this long is persisted again.
const FOLD_RETRY_MS: u64 = 60_000;

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
    /// Handed to the driver at this time and not failed since.
    sent_ms: Option<u64>,
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
    /// Whether that run left writes of this replica's own out as too young: the next run
    /// is due even if nothing moved, or a document gone quiet would keep them for ever.
    young_left: bool,
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
    /// Notes what connected peer `from` says it holds (its summary's version vector):
    /// only authors this replica holds, and no further than it holds them, are kept.
    pub(super) fn note_ack(&mut self, from: ActorId, claimed: &VersionVector) {
        if !self.peers.contains(&from) {
            return;
        }
        let mut vv = VersionVector::new();
        for (a, n) in self.log.vv().iter() {
            vv.advance(*a, claimed.get(a).min(*n));
        }
        let now = self.now_ms;
        let horizon = self.config.compaction_horizon_ms;
        let c = &mut self.compaction;
        match c.acks.get_mut(&from) {
            Some(ack) => {
                // Persisting every summary's time would write for ever: an hour is fine
                // against a horizon of days.
                if ack.vv != vv || now >= ack.heard_ms.saturating_add(3_600_000) {
                    c.acks_version += 1;
                }
                ack.vv = vv;
                ack.heard_ms = ack.heard_ms.max(now);
            }
            None => {
                if c.acks.len() >= MAX_ACKS {
                    // Only a peer past the horizon makes room: forgetting one within it
                    // would let newcomers move the cut past what it holds.
                    let stale = c
                        .acks
                        .iter()
                        .filter(|(_, a)| now.saturating_sub(a.heard_ms) > horizon)
                        .min_by_key(|(_, a)| a.heard_ms)
                        .map(|(k, _)| *k);
                    match stale {
                        Some(k) => {
                            c.acks.remove(&k);
                        }
                        None => return,
                    }
                }
                c.acks.insert(from, Ack { vv, heard_ms: now });
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
    /// peer's heard within the horizon. A connected peer not heard from yet holds it at
    /// nothing, and so, in a closed document, does the owner's replica until heard from
    /// (see the module).
    pub fn stable_cut(&self) -> VersionVector {
        let acks = &self.compaction.acks;
        if self.peers.iter().any(|p| !acks.contains_key(p)) {
            return VersionVector::new();
        }
        let owner = self
            .acl
            .owner()
            .filter(|o| !self.acl.is_open() && *o != self.actor);
        let owner_ack = match owner {
            Some(o) => match acks.get(&o) {
                Some(a) => Some(a),
                None => return VersionVector::new(),
            },
            None => None,
        };
        let mut cut = self.log.vv().clone();
        let horizon = self.config.compaction_horizon_ms;
        let heard = acks
            .values()
            .filter(|a| self.now_ms.saturating_sub(a.heard_ms) <= horizon);
        for ack in heard.chain(owner_ack) {
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

    /// Folds this replica's own durable entries older than [`MIN_AGE_MS`] in aligned
    /// blocks, leaving out its values dead at the stable cut (see the module). Each fold
    /// is persisted, then logged and broadcast. While earlier folds are on their way to
    /// disk, only those that failed (or never answered) are persisted again. Does nothing
    /// while catching up, when neither the log nor the cut moved since the last run (and
    /// it left none of its writes out as too young), or once this replica's writer is
    /// removed or banned (its folds could straddle its cut, or carry contexts that peers
    /// holding its older folds cannot order).
    pub(super) fn compact(&mut self) -> Result<(), SyncError> {
        if self.catching_up || self.is_cut(&self.actor) {
            return Ok(());
        }
        if !self.compaction.folding.is_empty() {
            self.persist_folds_again();
            return Ok(());
        }
        let cut = self.stable_cut();
        if self.log.len() == self.compaction.last_len
            && self.compaction.last_cut.as_ref() == Some(&cut)
            && !self.compaction.young_left
        {
            return Ok(());
        }
        self.compaction.last_len = self.log.len();
        self.compaction.last_cut = Some(cut.clone());
        let young = self.now_ms.saturating_sub(MIN_AGE_MS);
        let mut own: Vec<(&SignedDelta, usize)> = self.log.entries_of(&self.actor);
        let of_age = own
            .iter()
            .position(|(d, _)| d.hlc.millis > young)
            .unwrap_or(own.len());
        self.compaction.young_left = of_age < own.len();
        own.truncate(of_age);
        let Some(last) = own.last().map(|(d, _)| d.seqs.last) else {
            return Ok(());
        };
        // This replica's values live at the stable cut; only entries within it are judged
        // against them (newer ones of its own may be what killed an older value, which
        // the fold's join drops anyway).
        let upto = cut.get(&self.actor);
        let stable = (own[0].0.seqs.last <= upto).then(|| self.log.state_within(&cut));
        let live = stable.as_ref().map(|s| s.store.dots());
        let gone = match (&stable, &live) {
            (Some(stable), Some(live)) => self.dead_elsewhere(stable, live, &cut),
            _ => CausalContext::new(),
        };
        let entries: Vec<Entry<'_>> = own
            .into_iter()
            .map(|(d, _)| {
                let dead = match &live {
                    Some(live) if d.seqs.last <= upto => dead_dots(&d.delta.store, live),
                    _ => CausalContext::new(),
                };
                Entry { d, dead }
            })
            .collect();
        let mut folds = Vec::new();
        // The aligned blocks that tile [1, last], largest first.
        let mut start = 1u64;
        while start <= last && folds.len() < MAX_FOLDS {
            let mut size = 1u64 << (start - 1).trailing_zeros().min(62);
            while start - 1 + size > last {
                size /= 2;
            }
            self.plan(&entries, &gone, start, start - 1 + size, &mut folds);
            start += size;
        }
        for fold in folds.into_iter().take(MAX_FOLDS) {
            let size = fold.signing_bytes().len() + fold.signature.len();
            self.compaction.folding.push(Folding {
                ticket: 0,
                delta: fold,
                size,
                sent_ms: None,
            });
        }
        self.persist_folds_again();
        Ok(())
    }

    /// Plans the folds of aligned block `[lo, hi]`: one fold if its entries fit in one
    /// delta and folding them changes something, else its two halves in turn.
    fn plan(
        &self,
        entries: &[Entry<'_>],
        gone: &CausalContext,
        lo: u64,
        hi: u64,
        out: &mut Vec<SignedDelta>,
    ) {
        if out.len() >= MAX_FOLDS {
            return;
        }
        let inside: Vec<&Entry<'_>> = entries
            .iter()
            .filter(|e| e.d.seqs.last >= lo && e.d.seqs.first <= hi)
            .collect();
        // Nothing held there; or one entry covers the whole block and reaches past it (an
        // older fold: nothing in the block can be folded apart from it), or is the block
        // with nothing to leave out.
        if inside.is_empty()
            || inside.iter().any(|e| {
                let (first, last) = (e.d.seqs.first, e.d.seqs.last);
                first <= lo && last >= hi && (first < lo || last > hi || e.dead.is_empty())
            })
        {
            return;
        }
        let whole = inside
            .iter()
            .all(|e| e.d.seqs.first >= lo && e.d.seqs.last <= hi);
        if whole && (inside.len() >= 2 || !inside[0].dead.is_empty()) {
            let mut dead = CausalContext::new();
            for e in &inside {
                dead.union(&e.dead);
            }
            let run: Vec<&SignedDelta> = inside.iter().map(|e| e.d).collect();
            let fold = self.fold(&run, &dead, gone);
            let size = fold.signing_bytes().len() + fold.signature.len();
            if size <= self.config.max_delta_bytes / 2 || inside.len() == 1 {
                if size <= self.config.max_delta_bytes {
                    out.push(fold);
                }
                return;
            }
        }
        if lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.plan(entries, gone, lo, mid, out);
            self.plan(entries, gone, mid + 1, hi, out);
        }
    }

    /// Hands the driver every fold not on its way to disk (made just now, failed, or
    /// unanswered for [`FOLD_RETRY_MS`]), byte for byte as first made.
    fn persist_folds_again(&mut self) {
        let now = self.now_ms;
        let due: Vec<usize> = self
            .compaction
            .folding
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.sent_ms
                    .is_none_or(|t| now >= t.saturating_add(FOLD_RETRY_MS))
            })
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let ticket = self.ticket();
            let f = &mut self.compaction.folding[i];
            f.ticket = ticket;
            f.sent_ms = Some(now);
            let delta = f.delta.clone();
            self.outputs.push_back(Output::Persist { ticket, delta });
        }
    }

    /// Dots of other writers dead at the stable cut: seen in `stable` (the state at `cut`)
    /// no further than each writer's newest own dot within the cut, and held by no value
    /// there (`live`). Every replica holds the writes that removed them, so a fold may
    /// cover them: joining it removes only what those writes remove anyway. It keeps a
    /// fold's context to a few ranges per writer, where the dots its writes overwrote
    /// alone are scattered among the other writers' (one range each).
    fn dead_elsewhere(
        &self,
        stable: &Delta,
        live: &CausalContext,
        cut: &VersionVector,
    ) -> CausalContext {
        let reach = self.log.own_max_within(cut);
        let mut seen = CausalContext::new();
        for (actor, ranges) in stable.ctx.iter() {
            if *actor == self.actor {
                continue;
            }
            let top = reach.get(actor).copied().unwrap_or(0);
            for &(lo, hi) in ranges.iter().take_while(|r| r.0 <= top) {
                seen.insert_range(*actor, lo, hi.min(top));
            }
        }
        seen.difference(live)
    }

    /// One signed fold of `run` (consecutive entries of this replica's own), without the
    /// values in `dead`, the gaps of its context filled from `gone` (other writers' dots
    /// dead at the stable cut).
    fn fold(
        &self,
        run: &[&SignedDelta],
        dead: &CausalContext,
        gone: &CausalContext,
    ) -> SignedDelta {
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
        // Other writers' dots between two the run covers, all dead: covering them too
        // makes two ranges one, and removes nothing anywhere that is not removed anyway.
        folded.ctx.close_gaps(gone, &self.actor);
        let first = run.first().map_or(0, |d| d.seqs.first);
        let last = run.last().map_or(0, |d| d.seqs.last);
        let hlc = run.iter().map(|d| d.hlc).max().unwrap_or_default();
        self.sign(SeqRange { first, last }, hlc, folded, acl)
    }

    /// Folds durable up to `ticket` enter the log and go out to every replica.
    pub(super) fn folds_persisted(&mut self, ticket: u64) {
        let (landed, waiting): (Vec<Folding>, Vec<Folding>) =
            std::mem::take(&mut self.compaction.folding)
                .into_iter()
                .partition(|f| f.sent_ms.is_some() && f.ticket <= ticket);
        self.compaction.folding = waiting;
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

    /// A persist failed: folds on their way are persisted again, unchanged, at the next
    /// compaction (they may have reached the disk after all: a different fold of the same
    /// writes must never join them there).
    pub(super) fn folds_failed(&mut self) {
        for f in &mut self.compaction.folding {
            f.sent_ms = None;
        }
    }

    /// True while folds of this replica's own are on their way to disk.
    pub(super) fn folds_in_flight(&self) -> bool {
        !self.compaction.folding.is_empty()
    }

    /// This replica's own writes past `cut` were dropped: so are folds reaching past it.
    pub(super) fn folds_cut(&mut self, cut: u64) {
        self.compaction.folding.retain(|f| f.delta.seqs.last <= cut);
    }
}

/// One of this replica's own entries, and its values dead at the stable cut.
struct Entry<'a> {
    d: &'a SignedDelta,
    dead: CausalContext,
}
