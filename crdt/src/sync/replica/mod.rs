//! [`Replica`]: the replication state machine of one document on one node.
//!
//! Sans-IO: the driver feeds [`Input`]s with the current time through
//! [`Replica::handle`], then drains [`Output`]s with [`Replica::poll_output`] until it
//! returns `None` — after *every* call to `handle`. The replica never reads a clock, never
//! draws global randomness (its RNG is seeded by the driver) and never touches the
//! network or the disk.
//!
//! Durability contract: every delta the replica applies is handed out as
//! [`Output::Persist`] with an increasing ticket; the driver stores them in ticket order
//! and reports [`Input::Persisted`]. A local write is acknowledged
//! ([`Event::Acknowledged`]), broadcast and served to peers only once it is durable, so a
//! crash can lose only writes nobody was told about, and no peer ever saw.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::acl::{Acl, AclOp};

mod access;
use super::funnel::check_shape;
use super::interface::{Config, Event, Input, Output, Stats, SyncError};
use super::log::DeltaLog;
use super::message::{Authenticator, Message, SeqRange, SignedDelta};
use crate::check::DeltaLimits;
use crate::clock::{Hlc, Timestamp};
use crate::doc::{Delta, Doc, DocError, Op};
use crate::id::{ActorId, DocId};
use crate::vv::VersionVector;

/// A local write waiting to become durable.
#[derive(Debug)]
struct Unacked {
    ticket: u64,
    tag: u64,
    delta: SignedDelta,
    size: usize,
}

/// A peer's delta held back: out of order, or covering dots not seen here yet.
#[derive(Debug)]
struct Held {
    delta: SignedDelta,
    size: usize,
    expires_ms: u64,
}

/// One document's replica on one node.
pub struct Replica {
    config: Config,
    actor: ActorId,
    auth: Arc<dyn Authenticator>,
    acl: Acl,
    doc: Doc,
    clock: Hlc,
    log: DeltaLog,
    /// Sequence number of the next local write (counts unacknowledged ones).
    next_seq: u64,
    unacked: VecDeque<Unacked>,
    next_ticket: u64,
    /// Held-back deltas, verified, by (author, first seq); bounded by count and bytes.
    pending: BTreeMap<(ActorId, u64), Held>,
    pending_bytes: usize,
    peers: BTreeSet<ActorId>,
    rng: ChaCha8Rng,
    next_anti_entropy_ms: u64,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl Replica {
    /// A new, empty replica of document `doc` for `actor`.
    pub fn new(
        doc: DocId,
        actor: ActorId,
        auth: Arc<dyn Authenticator>,
        config: Config,
        seed: u64,
    ) -> Self {
        let clock = Hlc::new(config.max_clock_drift_ms);
        Replica {
            config,
            actor,
            auth,
            acl: Acl::open(),
            doc: Doc::new(doc),
            clock,
            log: DeltaLog::default(),
            next_seq: 1,
            unacked: VecDeque::new(),
            next_ticket: 1,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            peers: BTreeSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_anti_entropy_ms: 0,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The same replica under `acl` (a closed document's genesis rules) instead of open.
    pub fn with_acl(mut self, acl: Acl) -> Self {
        self.acl = acl;
        self
    }

    /// Rebuilds a replica from the deltas it had persisted (in any order), under the
    /// genesis rules `acl`. They came from this node's own store, so they are not verified
    /// again; deltas of another document are skipped, and so is any that would leave a gap
    /// or that the owner's access edits make invalid.
    pub fn restore(
        doc: DocId,
        actor: ActorId,
        auth: Arc<dyn Authenticator>,
        config: Config,
        seed: u64,
        acl: Acl,
        stored: impl IntoIterator<Item = SignedDelta>,
    ) -> Self {
        let mut r = Replica::new(doc, actor, auth, config, seed).with_acl(acl);
        let mut all: Vec<SignedDelta> = stored.into_iter().filter(|d| d.doc == doc).collect();
        // Longest range first among equal starts, so a fold lands before what it covers.
        all.sort_by(|a, b| {
            (a.author, a.seqs.first, std::cmp::Reverse(a.seqs.last)).cmp(&(
                b.author,
                b.seqs.first,
                std::cmp::Reverse(b.seqs.last),
            ))
        });
        // The owner's edits first, in its order: they decide which other deltas count.
        let mut owner_seq = 0;
        let owner = r.acl.owner();
        for d in all.iter().filter(|d| Some(d.author) == owner) {
            if d.seqs.last > owner_seq && d.seqs.first <= owner_seq + 1 {
                owner_seq = d.seqs.last;
                for op in &d.acl {
                    r.acl.apply(op);
                }
            }
        }
        let mut latest = Timestamp::default();
        for d in all {
            if d.seqs.last <= r.log.vv().get(&d.author) || !r.acl.permits(&d.author, d.seqs.last) {
                continue;
            }
            let size = d.signing_bytes().len() + d.signature.len();
            let delta = d.delta.clone();
            let hlc = d.hlc;
            // The log refuses a delta that would leave a gap; then the document must not
            // hold it either, or its content would outrun its version vector.
            if r.log.insert(d, size) {
                r.doc.apply(&delta);
                latest = latest.max(hlc);
            }
        }
        r.clock.restore(latest);
        r.next_seq = r.log.vv().get(&actor) + 1;
        r
    }

    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// Who may write, as the owner's edits held so far say.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// The version vector of deltas held and servable (own writes once durable).
    pub fn vv(&self) -> &VersionVector {
        self.log.vv()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of deltas in the log (shrinks when authors fold).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Every delta held, for snapshots and tests.
    pub fn deltas(&self) -> impl Iterator<Item = &SignedDelta> {
        self.log.iter()
    }

    pub fn peers(&self) -> impl Iterator<Item = &ActorId> {
        self.peers.iter()
    }

    /// The next thing for the driver to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Feeds one input at physical time `now_ms`. On error the document is unchanged by
    /// the offending write or delta (other deltas in the same batch may still apply).
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Result<(), SyncError> {
        match input {
            Input::Write { op, tag } => self.write(now_ms, Some(&op), Vec::new(), tag),
            Input::Admin { change, tag } => {
                let op = self.acl_op(change)?;
                self.write(now_ms, None, vec![op], tag)
            }
            Input::Message { from, msg } => self.on_message(now_ms, from, msg, false),
            Input::Verified { from, msg } => {
                self.on_message(now_ms, from, msg.into_message(), true)
            }
            Input::PeerUp(peer) => {
                // Both ends learn of the link; the one with the lower actor id starts the
                // exchange, which syncs both ways in one round trip. Starting from both
                // ends would send every missing delta twice.
                if peer != self.actor && self.peers.insert(peer) && self.actor < peer {
                    self.send_summary(peer, true);
                }
                Ok(())
            }
            Input::PeerDown(peer) => {
                self.peers.remove(&peer);
                Ok(())
            }
            Input::Persisted { ticket } => {
                self.on_persisted(ticket);
                Ok(())
            }
            Input::Tick => {
                self.on_tick(now_ms);
                Ok(())
            }
            Input::Fold => self.fold_own(),
        }
    }

    fn write(
        &mut self,
        now_ms: u64,
        op: Option<&Op>,
        acl: Vec<AclOp>,
        tag: u64,
    ) -> Result<(), SyncError> {
        if !self.acl.may_write(&self.actor) {
            return Err(SyncError::NotAWriter { author: self.actor });
        }
        let mut clock = self.clock.clone();
        let hlc = clock.now(now_ms);
        let delta = match op {
            Some(op) => self.doc.prepare(self.actor, hlc, op)?,
            None => Delta::default(),
        };
        let signed = self.sign(SeqRange::one(self.next_seq), hlc, delta, acl);
        let size = signed.signing_bytes().len() + signed.signature.len();
        if size > self.config.max_delta_bytes {
            return Err(SyncError::DeltaTooLarge {
                size,
                max: self.config.max_delta_bytes,
            });
        }
        self.clock = clock;
        self.doc.apply(&signed.delta);
        self.apply_acl(&signed);
        self.next_seq += 1;
        let ticket = self.ticket();
        self.outputs.push_back(Output::Persist {
            ticket,
            delta: signed.clone(),
        });
        self.event(Event::Applied {
            author: self.actor,
            seqs: signed.seqs,
            local: true,
        });
        self.unacked.push_back(Unacked {
            ticket,
            tag,
            delta: signed,
            size,
        });
        Ok(())
    }

    fn sign(&self, seqs: SeqRange, hlc: Timestamp, delta: Delta, acl: Vec<AclOp>) -> SignedDelta {
        let mut d = SignedDelta {
            doc: self.doc.id(),
            author: self.actor,
            seqs,
            hlc,
            delta: Arc::new(delta),
            acl,
            signature: Vec::new(),
        };
        d.signature = self.auth.sign(&self.actor, &d.signing_bytes());
        d
    }

    fn ticket(&mut self) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn on_persisted(&mut self, ticket: u64) {
        while self.unacked.front().is_some_and(|u| u.ticket <= ticket) {
            let Some(u) = self.unacked.pop_front() else {
                break;
            };
            let seq = u.delta.seqs.last;
            self.log.insert(u.delta.clone(), u.size);
            self.event(Event::Acknowledged { tag: u.tag, seq });
            self.outputs
                .push_back(Output::Broadcast(Message::Delta(u.delta)));
        }
    }

    fn on_tick(&mut self, now_ms: u64) {
        self.expire_pending(now_ms);
        if now_ms < self.next_anti_entropy_ms || self.peers.is_empty() {
            return;
        }
        self.next_anti_entropy_ms = now_ms + self.config.anti_entropy_interval_ms;
        self.summary_to_random_peer(None);
    }

    /// Starts an exchange with a random peer other than `except`, if there is one.
    fn summary_to_random_peer(&mut self, except: Option<ActorId>) {
        let candidates =
            self.peers.len() - usize::from(except.is_some_and(|e| self.peers.contains(&e)));
        if candidates == 0 {
            return;
        }
        let i = self.rng.random_range(0..candidates);
        if let Some(peer) = self
            .peers
            .iter()
            .filter(|p| Some(**p) != except)
            .nth(i)
            .copied()
        {
            self.send_summary(peer, true);
        }
    }

    fn send_summary(&mut self, to: ActorId, reply: bool) {
        let msg = Message::Summary {
            doc: self.doc.id(),
            vv: self.log.vv().clone(),
            reply,
        };
        self.outputs.push_back(Output::Send { to, msg });
    }

    fn check_doc(&self, got: DocId) -> Result<(), SyncError> {
        if got != self.doc.id() {
            return Err(SyncError::WrongDoc {
                expected: self.doc.id(),
                got,
            });
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        now_ms: u64,
        from: ActorId,
        msg: Message,
        verified: bool,
    ) -> Result<(), SyncError> {
        if let Err(e) = self.check_doc(msg.doc()) {
            self.stats.rejected += 1;
            return Err(e);
        }
        match msg {
            Message::Delta(d) => self.receive(now_ms, d, verified),
            Message::Summary { vv, reply, .. } => {
                let (deltas, more) = self.log.missing_for(
                    &vv,
                    self.config.max_batch_deltas,
                    self.config.max_batch_bytes,
                );
                if !deltas.is_empty() {
                    let msg = Message::Deltas {
                        doc: self.doc.id(),
                        deltas,
                        more,
                    };
                    self.outputs.push_back(Output::Send { to: from, msg });
                }
                if reply && self.log.vv().lacks_any_of(&vv) {
                    self.send_summary(from, false);
                }
                Ok(())
            }
            Message::Deltas { deltas, more, .. } => {
                let before = self.log.vv().total();
                let mut first_err = Ok(());
                // An honest peer never sends a bad delta: the first one ends the batch.
                for d in deltas {
                    if let Err(e) = self.receive(now_ms, d, verified) {
                        first_err = Err(e);
                        break;
                    }
                }
                let progressed = self.log.vv().total() > before;
                // Ask for the next batch only if this one made progress, so a peer that
                // keeps saying "more" without delivering cannot keep us busy.
                if more && progressed {
                    self.send_summary(from, false);
                } else if progressed {
                    // News learned by repair spreads on by repair: start an exchange with
                    // another random peer now rather than at the next periodic round. It
                    // stops by itself where an exchange brings nothing new.
                    self.summary_to_random_peer(Some(from));
                }
                first_err
            }
        }
    }

    /// Takes a delta from the network through the funnel (see [`super::funnel`]): apply,
    /// hold back, ignore or refuse it. `verified`: stages 1 and 3 already passed.
    fn receive(&mut self, now_ms: u64, d: SignedDelta, verified: bool) -> Result<(), SyncError> {
        let result = self.try_receive(now_ms, d, verified);
        if result.is_err() {
            self.stats.rejected += 1;
        }
        result
    }

    fn try_receive(
        &mut self,
        now_ms: u64,
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
        let known = self.log.vv().get(&d.author);
        if d.author == self.actor {
            if last < self.next_seq {
                self.stats.duplicates += 1;
                return Ok(());
            }
            return Err(SyncError::OwnDeltaFromFuture { seq: last, known });
        }
        if last <= known && !self.log.would_fold(&d) {
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
            self.hold(now_ms, d, size);
            return Ok(());
        }
        match self.judge(now_ms, &d) {
            Ok(()) => {
                self.apply_judged(now_ms, d, size);
                self.drain_pending(now_ms);
                Ok(())
            }
            Err(e) if early(&e) => {
                self.hold(now_ms, d, size);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Holds back a verified delta that cannot apply yet, within the count and byte
    /// bounds; anti-entropy brings back what is dropped here.
    fn hold(&mut self, now_ms: u64, delta: SignedDelta, size: usize) {
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
            },
        );
        self.stats.buffered += 1;
    }

    fn unhold(&mut self, key: &(ActorId, u64)) -> Option<Held> {
        let h = self.pending.remove(key)?;
        self.pending_bytes -= h.size;
        Some(h)
    }

    /// Drops held-back deltas that waited too long.
    fn expire_pending(&mut self, now_ms: u64) {
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
    /// against the current state; changes nothing.
    fn judge(&self, now_ms: u64, d: &SignedDelta) -> Result<(), SyncError> {
        if !self.acl.permits(&d.author, d.seqs.last) {
            return Err(SyncError::NotAWriter { author: d.author });
        }
        let limits = DeltaLimits {
            now_ms,
            max_drift_ms: self.config.max_clock_drift_ms,
            max_dot_lead: self.config.max_dot_lead,
        };
        // A delta that only extends the run must hold new dots only; a fold over entries
        // held here re-sends old ones.
        let fresh = d.seqs.first > self.log.vv().get(&d.author);
        self.doc
            .validate_delta(&d.author, &d.delta, &limits, fresh)
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
        if d.seqs.last > self.log.vv().get(&d.author) {
            self.doc.apply(&d.delta);
            self.stats.applied += 1;
            self.event(Event::Applied {
                author: d.author,
                seqs: d.seqs,
                local: false,
            });
        } else {
            self.stats.folded += 1;
        }
        self.log.insert(d.clone(), size);
        let ticket = self.ticket();
        self.outputs.push_back(Output::Persist {
            ticket,
            delta: d.clone(),
        });
        self.apply_acl(&d);
    }

    /// Applies held-back deltas that can now apply, until none can. Bounded: every pass
    /// that continues has applied or dropped at least one of at most `max_pending`.
    fn drain_pending(&mut self, now_ms: u64) {
        loop {
            let mut progressed = false;
            let keys: Vec<(ActorId, u64)> = self.pending.keys().copied().collect();
            for key in keys {
                let known = self.log.vv().get(&key.0);
                if key.1 > known + 1 {
                    continue;
                }
                let Some(h) = self.unhold(&key) else {
                    continue;
                };
                if h.delta.seqs.last <= known && !self.log.would_fold(&h.delta) {
                    self.stats.duplicates += 1;
                    continue;
                }
                match self.judge(now_ms, &h.delta) {
                    Ok(()) => {
                        self.apply_judged(now_ms, h.delta, h.size);
                        progressed = true;
                    }
                    // Still early: back in, keeping its deadline.
                    Err(e) if early(&e) => {
                        self.pending_bytes += h.size;
                        self.pending.insert(key, h);
                    }
                    Err(_) => self.stats.rejected += 1,
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Folds this replica's oldest durable deltas into one re-signed delta that replaces
    /// them here and, once broadcast, on every replica. Skips when there is nothing to
    /// fold or the fold would exceed the delta size limit.
    fn fold_own(&mut self) -> Result<(), SyncError> {
        let mut n = self.config.fold_batch;
        while n >= 2 {
            let run = self.log.first_entries(&self.actor, n);
            if run.len() < 2 {
                return Ok(());
            }
            let first = run[0].seqs.first;
            let last = run[run.len() - 1].seqs.last;
            let hlc = run.iter().map(|d| d.hlc).max().unwrap_or_default();
            let mut folded = Delta::default();
            let mut acl = Vec::new();
            for d in &run {
                folded.join_with(&d.delta);
                acl.extend_from_slice(&d.acl);
            }
            let signed = self.sign(SeqRange { first, last }, hlc, folded, acl);
            let size = signed.signing_bytes().len() + signed.signature.len();
            if size <= self.config.max_delta_bytes {
                self.log.insert(signed.clone(), size);
                self.stats.folded += 1;
                let ticket = self.ticket();
                self.outputs.push_back(Output::Persist {
                    ticket,
                    delta: signed.clone(),
                });
                self.outputs
                    .push_back(Output::Broadcast(Message::Delta(signed)));
                return Ok(());
            }
            n = run.len() / 2;
        }
        Ok(())
    }
}

/// True if a delta was refused only for covering dots not seen here yet: it may apply
/// later, so it is held back rather than refused.
fn early(e: &SyncError) -> bool {
    matches!(
        e,
        SyncError::Doc {
            source: DocError::NotYetSeen { .. },
            ..
        }
    )
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("doc", &self.doc.id())
            .field("actor", &self.actor)
            .field("vv", self.log.vv())
            .field("pending", &self.pending.len())
            .field("unacked", &self.unacked.len())
            .finish_non_exhaustive()
    }
}
