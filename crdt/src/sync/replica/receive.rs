//! The way in for a peer's delta (stages 2 to 4 of [`crate::sync::funnel`]): what the
//! replica knows, the signature, the judgement against the state; then apply, hold back
//! (bounded, expiring) or refuse.

use super::equivocation::inconsistent;
use super::{Held, Replica};
use crate::check::{DeltaLimits, Known, Novelty};
use crate::ctx::CausalContext;
use crate::doc::DocError;
use crate::id::ActorId;
use crate::sync::funnel::check_shape;
use crate::sync::interface::{Event, Output, SyncError};
use crate::sync::log::Overlap;
use crate::sync::message::{SeqRange, SignedDelta};

impl Replica {
    /// Takes a delta from the network through the funnel (see [`super::funnel`]): apply,
    /// hold back, ignore or refuse it. `verified`: stages 1 and 3 already passed.
    pub(super) fn receive(
        &mut self,
        now_ms: u64,
        from: ActorId,
        d: SignedDelta,
        verified: bool,
    ) -> Result<(), SyncError> {
        let result = self.try_receive(now_ms, from, d, verified);
        if result.is_err() {
            self.stats.rejected += 1;
        }
        result
    }

    fn try_receive(
        &mut self,
        now_ms: u64,
        from: ActorId,
        d: SignedDelta,
        verified: bool,
    ) -> Result<(), SyncError> {
        // Stage 1: shape. Verified messages passed it already; the cheap parts repeat.
        let bytes = if verified {
            self.check_doc(d.doc)?;
            if !d.seqs.is_valid() {
                return Err(SyncError::BadSeqRange {
                    first: d.seqs.first,
                    last: d.seqs.last,
                });
            }
            None
        } else {
            Some(check_shape(self.doc.id(), &d, self.config.max_delta_bytes)?)
        };
        // Stage 2: what this replica knows.
        let SeqRange { first, last } = d.seqs;
        if !d.acl.is_empty() && self.acl.owner() != Some(d.author) {
            return Err(SyncError::NotOwner);
        }
        if self.banned(&d.author) {
            // Relayed by a peer that has not heard yet: not its fault; tell it.
            self.stats.dropped += 1;
            self.send_evidence(now_ms, from, &d.author);
            return Ok(());
        }
        let known = self.log.vv().get(&d.author);
        if d.author == self.actor {
            if last < self.next_seq {
                // A more compacted version of writes held here (re-signed before a lost
                // store) is adopted like anyone's: a fold of the older one would not
                // contain it, and replicas holding it would take that for equivocation.
                // Only within what the log holds (not this life's writes on their way to
                // disk), and not while folds of ours are: they were made without it.
                let adopt = last <= known
                    && !self.folds_in_flight()
                    && matches!(self.seen(&d), Seen::Folds(_));
                if !adopt {
                    self.stats.duplicates += 1;
                    return Ok(());
                }
            } else if self.next_seq != known + 1 {
                // Our own write from before a lost store: adopt it like anyone's, unless
                // local writes of this life are already in flight (they used these
                // numbers again).
                return Err(SyncError::OwnDeltaFromFuture { seq: last, known });
            }
        }
        if matches!(self.seen(&d), Seen::Duplicate) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if first
            > known
                .saturating_add(1)
                .saturating_add(self.config.max_seq_lead)
        {
            return Err(SyncError::SeqTooFarAhead {
                author: d.author,
                seq: first,
                known,
                max_lead: self.config.max_seq_lead,
            });
        }
        if !self.acl.permits(&d.author, last) {
            return Err(SyncError::NotAWriter { author: d.author });
        }
        // Stage 3: the signature.
        if let Some(bytes) = &bytes {
            if !self.auth.verify(&d.author, bytes, &d.signature) {
                return Err(SyncError::BadSignature {
                    author: d.author,
                    first,
                    last,
                });
            }
        }
        let size = bytes.map_or_else(|| d.signing_bytes().len(), |b| b.len()) + d.signature.len();
        // Stage 4: against the state.
        if first > known + 1 {
            self.hold(now_ms, d, size, None);
            return Ok(());
        }
        match self.admit(now_ms, d, size) {
            Admit::Applied => {
                self.drain_pending(now_ms);
                Ok(())
            }
            Admit::Done => Ok(()),
            Admit::Early(d, waiting) => {
                self.hold(now_ms, *d, size, Some(waiting));
                Ok(())
            }
            Admit::Refused(e) => Err(e),
        }
    }

    /// How `d` relates to what is held of its author, as owned values.
    fn seen(&self, d: &SignedDelta) -> Seen {
        match self.log.overlap(d) {
            Overlap::New => Seen::New,
            Overlap::Same | Overlap::Covered => Seen::Duplicate,
            Overlap::Covers(held) => Seen::Folds(held.into_iter().cloned().collect()),
            Overlap::Conflict(held) => Seen::Conflict(held.clone()),
        }
    }

    /// Decides on a verified delta that leaves no gap in its author's run: drop a
    /// duplicate, catch an equivocation, or judge it against the state and apply it.
    fn admit(&mut self, now_ms: u64, d: SignedDelta, size: usize) -> Admit {
        let covered = match self.seen(&d) {
            Seen::Duplicate => {
                self.stats.duplicates += 1;
                return Admit::Done;
            }
            Seen::Conflict(held) => {
                self.caught(held, d);
                return Admit::Done;
            }
            Seen::Folds(covered) => {
                // The cheap refusal before the containment check, which joins every entry
                // the fold covers.
                if let Err(e) = self.clock.check(d.hlc, now_ms) {
                    return Admit::Refused(e.into());
                }
                if let Some(held) = inconsistent(&d, &covered) {
                    self.caught(held, d);
                    return Admit::Done;
                }
                let mut ctx = CausalContext::new();
                for c in &covered {
                    ctx.union(&c.delta.ctx);
                }
                Some(ctx)
            }
            Seen::New => None,
        };
        match self.judge(now_ms, &d, covered.as_ref()) {
            Ok(()) => {
                self.apply_judged(now_ms, d, size);
                Admit::Applied
            }
            Err(SyncError::Doc {
                source: DocError::NotYetSeen { actor, counter, .. },
                ..
            }) => Admit::Early(Box::new(d), (actor, counter)),
            Err(e) => Admit::Refused(e),
        }
    }

    /// Holds back a verified delta that cannot apply yet, within the count and byte
    /// bounds; anti-entropy brings back what is dropped here.
    pub(super) fn hold(
        &mut self,
        now_ms: u64,
        delta: SignedDelta,
        size: usize,
        waiting: Option<(ActorId, u64)>,
    ) {
        let key = (delta.author, delta.seqs.first);
        if self.pending.contains_key(&key) {
            self.stats.duplicates += 1;
            return;
        }
        let full = |r: &Self| {
            r.pending.len() >= r.config.max_pending
                || r.pending_bytes.saturating_add(size) > r.config.max_pending_bytes
        };
        if full(self) {
            self.expire_pending(now_ms);
        }
        if full(self) {
            self.stats.dropped += 1;
            return;
        }
        self.pending_bytes += size;
        self.pending.insert(
            key,
            Held {
                delta,
                size,
                expires_ms: now_ms.saturating_add(self.config.pending_ttl_ms),
                waiting,
            },
        );
        self.stats.buffered += 1;
    }

    pub(super) fn unhold(&mut self, key: &(ActorId, u64)) -> Option<Held> {
        let h = self.pending.remove(key)?;
        self.pending_bytes -= h.size;
        Some(h)
    }

    /// Drops held-back deltas that waited too long.
    pub(super) fn expire_pending(&mut self, now_ms: u64) {
        let old: Vec<(ActorId, u64)> = self
            .pending
            .iter()
            .filter(|(_, h)| h.expires_ms <= now_ms)
            .map(|(k, _)| *k)
            .collect();
        for key in old {
            self.unhold(&key);
            self.stats.expired += 1;
        }
    }

    /// Stage 4's judgement of a verified delta that extends (or folds) its author's run,
    /// against the current state; changes nothing. `covered`: for a fold, the contexts of
    /// the held entries it replaces.
    fn judge(
        &self,
        now_ms: u64,
        d: &SignedDelta,
        covered: Option<&CausalContext>,
    ) -> Result<(), SyncError> {
        if !self.acl.permits(&d.author, d.seqs.last) {
            return Err(SyncError::NotAWriter { author: d.author });
        }
        let limits = DeltaLimits {
            now_ms,
            max_drift_ms: self.config.max_clock_drift_ms,
            max_dot_lead: self.config.max_dot_lead,
        };
        // A delta that only extends the run must hold new dots only; a fold over entries
        // held here may re-send the dots those entries made, and new ones only if it
        // reaches past them.
        let novelty = match covered {
            None => Novelty::Fresh,
            Some(covered) => Novelty::Fold {
                covered,
                extends: d.seqs.last > self.log.vv().get(&d.author),
            },
        };
        let cut = |a: &ActorId| self.is_cut(a);
        let held = |a: &ActorId, dot: u64| {
            self.pending
                .range((*a, 0)..=(*a, u64::MAX))
                .any(|(_, h)| h.delta.delta.ctx.max(a) >= dot)
        };
        let known = Known {
            own_max: self.log.own_max(&d.author),
            cut: &cut,
            held: &held,
        };
        self.doc
            .validate_delta(&d.author, &d.delta, &limits, novelty, known)
            .map_err(|source| SyncError::Doc {
                author: d.author,
                source,
            })?;
        self.clock.check(d.hlc, now_ms)?;
        Ok(())
    }

    /// Applies a delta that [`Replica::judge`] passed.
    fn apply_judged(&mut self, now_ms: u64, d: SignedDelta, size: usize) {
        // Judged against the same `now_ms`: cannot fail.
        let _ = self.clock.observe(d.hlc, now_ms);
        // A fold joins too. It holds nothing the entries it covers here did not (else the
        // author was caught equivocating), but it may hold less (a write it covers was
        // overwritten): a replica that receives only the fold applies it whole, so this
        // one must drop the same.
        self.doc.apply(&d.delta);
        if d.seqs.last > self.log.vv().get(&d.author) {
            self.stats.applied += 1;
            self.event(Event::Applied {
                author: d.author,
                seqs: d.seqs,
                hlc: d.hlc,
                local: false,
            });
        } else {
            self.stats.folded += 1;
        }
        self.log.insert(d.clone(), size);
        if d.author == self.actor {
            // Adopted: the next local write continues after it.
            self.next_seq = self.next_seq.max(self.log.vv().get(&self.actor) + 1);
        }
        let ticket = self.ticket();
        self.outputs.push_back(Output::Persist {
            ticket,
            delta: d.clone(),
        });
        self.apply_acl(&d);
    }

    /// Applies held-back deltas that can now apply, until none can. Bounded: every pass
    /// that continues has applied or dropped at least one of at most `max_pending`.
    pub(super) fn drain_pending(&mut self, now_ms: u64) {
        loop {
            let mut progressed = false;
            let keys: Vec<(ActorId, u64)> = self.pending.keys().copied().collect();
            for key in keys {
                let known = self.log.vv().get(&key.0);
                if key.1 > known + 1 {
                    continue;
                }
                // Held for a dot: judge it again only once that dot is seen (or its actor
                // cut), so a full buffer costs a lookup per entry, not a validation.
                let ready = self.pending.get(&key).is_some_and(|h| {
                    h.waiting.is_none_or(|(actor, counter)| {
                        self.doc.ctx().max(&actor) >= counter || self.is_cut(&actor)
                    })
                });
                if !ready {
                    continue;
                }
                let Some(h) = self.unhold(&key) else {
                    continue;
                };
                let (size, expires_ms) = (h.size, h.expires_ms);
                match self.admit(now_ms, h.delta, size) {
                    Admit::Applied | Admit::Done => progressed = true,
                    // Still early: back in, keeping its deadline.
                    Admit::Early(delta, waiting) => {
                        self.pending_bytes += size;
                        self.pending.insert(
                            key,
                            Held {
                                delta: *delta,
                                size,
                                expires_ms,
                                waiting: Some(waiting),
                            },
                        );
                    }
                    Admit::Refused(_) => self.stats.rejected += 1,
                }
            }
            if !progressed {
                return;
            }
        }
    }
}

/// How an incoming delta relates to what is held of its author.
enum Seen {
    New,
    Duplicate,
    /// A fold over these held entries.
    Folds(Vec<SignedDelta>),
    /// Another version of a held entry.
    Conflict(SignedDelta),
}

/// What [`Replica::admit`] did.
enum Admit {
    Applied,
    /// Dropped as a duplicate, or taken as evidence of equivocation.
    Done,
    /// Covers a dot not seen here yet (`(actor, counter)`): hold it back.
    Early(Box<SignedDelta>, (ActorId, u64)),
    Refused(SyncError),
}
