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

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::acl::{Acl, AclOp};

mod access;
mod compact;
mod equivocation;
mod exchange;
mod observe;
mod receive;
mod timers;

use super::interface::{Config, Event, Input, Output, Stats, SyncError};
use super::log::DeltaLog;
use super::message::{Authenticator, Message, SeqRange, SignedDelta};
use crate::clock::{Hlc, Timestamp};
use crate::doc::{Delta, Doc, Op};
use crate::id::{ActorId, DocId};
use crate::vv::VersionVector;
pub use compact::{Ack, MAX_ACKS, MIN_AGE_MS};
pub use observe::Cut;

/// While catching up, how long after asking a peer local writes wait for it to send any
/// of our own writes back: past this, it had none.
const CATCH_UP_WAIT_MS: u64 = 10_000;
/// Authors with nothing applied here that one peer's claims may name ([`Replica::note_claims`]).
pub(super) const MAX_UNHEARD_AUTHORS: usize = 256;

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
    /// Held for a dot not seen yet: worth judging again only once it is.
    waiting: Option<(ActorId, u64)>,
}

/// One document's replica on one node.
pub struct Replica {
    config: Config,
    actor: ActorId,
    auth: Arc<dyn Authenticator>,
    acl: Acl,
    /// The rules at birth, before any of the owner's edits.
    genesis_acl: Acl,
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
    /// Each connected peer's latest summary: how far it says each author's writes go
    /// (replaced by its next summary, dropped when it leaves). Unsigned claims, so only a
    /// measure of lag, never a reason to act; filtered and bounded by
    /// [`Replica::note_claims`].
    pub(super) claims: BTreeMap<ActorId, VersionVector>,
    /// Authors caught equivocating (see [`equivocation`]).
    bans: equivocation::Bans,
    /// What peer replicas hold, and this replica's folds on their way (see [`compact`]).
    compaction: compact::Compaction,
    /// Local writes wait until a peer has said how far this replica's own writes go: a
    /// node that lost its store but kept its key may have written here before, and must
    /// not sign the same sequence numbers again.
    catching_up: bool,
    /// While catching up: when a summary first went to a peer.
    asked_ms: Option<u64>,
    /// The time of the current input, as the driver gave it.
    now_ms: u64,
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
            genesis_acl: Acl::open(),
            doc: Doc::new(doc),
            clock,
            log: DeltaLog::default(),
            next_seq: 1,
            unacked: VecDeque::new(),
            next_ticket: 1,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            peers: BTreeSet::new(),
            claims: BTreeMap::new(),
            bans: equivocation::Bans::default(),
            compaction: compact::Compaction::default(),
            catching_up: false,
            asked_ms: None,
            now_ms: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_anti_entropy_ms: 0,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The same replica under `acl` (a closed document's genesis rules) instead of open.
    pub fn with_acl(mut self, acl: Acl) -> Self {
        self.genesis_acl = acl.clone();
        self.acl = acl;
        self
    }

    /// The same replica, refusing local writes ([`SyncError::CatchingUp`]) until a peer's
    /// summary shows that no write of this replica's own is missing here: for a document
    /// joined with an empty log, which this node may have written to before losing its
    /// store. Its own deltas that peers send back are adopted.
    pub fn catching_up(mut self) -> Self {
        self.catching_up = true;
        self
    }

    /// True while local writes wait for a peer (see [`Replica::catching_up`]).
    pub fn is_catching_up(&self) -> bool {
        self.catching_up
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
        self.now_ms = now_ms;
        match input {
            Input::Write { op, tag } => self.write(now_ms, Some(&op), Vec::new(), tag),
            Input::Admin { changes, tag } => {
                let ops = self.acl_ops(changes)?;
                self.write(now_ms, None, ops, tag)
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
                self.claims.remove(&peer);
                Ok(())
            }
            Input::Reconcile(peer) => {
                if self.peers.contains(&peer) {
                    self.send_summary(peer, true);
                }
                Ok(())
            }
            Input::PeerHolds(peer) => {
                if self.peers.contains(&peer) {
                    let vv = self.log.vv().clone();
                    self.note_ack(peer, &vv);
                }
                Ok(())
            }
            Input::Persisted { ticket } => {
                self.on_persisted(ticket);
                Ok(())
            }
            Input::PersistFailed => {
                self.on_persist_failed();
                Ok(())
            }
            Input::Tick => {
                self.on_tick(now_ms);
                Ok(())
            }
            Input::Compact => self.compact(),
        }
    }

    fn write(
        &mut self,
        now_ms: u64,
        op: Option<&Op>,
        acl: Vec<AclOp>,
        tag: u64,
    ) -> Result<(), SyncError> {
        if self.catching_up {
            return Err(SyncError::CatchingUp);
        }
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
            hlc: signed.hlc,
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
        self.folds_persisted(ticket);
    }

    /// Undoes every local write not yet acknowledged (see [`Input::PersistFailed`]).
    fn on_persist_failed(&mut self) {
        let durable = self.log.vv().get(&self.actor);
        let edited_acl = self.unacked.iter().any(|u| !u.delta.acl.is_empty());
        self.folds_failed();
        // Refuses them, rebuilds the document from the log, and asks for the disk cut.
        self.truncate(self.actor, durable);
        self.next_seq = durable + 1;
        if edited_acl {
            // Access edits of the undone writes were applied when written: rebuild the
            // rules from the genesis and the owner's durable edits.
            let mut acl = self.genesis_acl.clone();
            let mut owner_deltas: Vec<&SignedDelta> = self
                .log
                .iter()
                .filter(|d| Some(d.author) == acl.owner())
                .collect();
            owner_deltas.sort_by_key(|d| d.seqs.first);
            for d in owner_deltas {
                for op in &d.acl {
                    acl.apply(op);
                }
            }
            self.acl = acl;
        }
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
            Message::Delta(d) => self.receive(now_ms, from, d, verified),
            Message::Evidence { deltas, .. } => {
                let r = self.on_evidence(deltas, verified);
                if r.is_err() {
                    self.stats.rejected += 1;
                }
                r
            }
            Message::Entries {
                author, entries, ..
            } => {
                self.answer_listing(from, &author, &entries);
                Ok(())
            }
            Message::Summary {
                vv,
                reply,
                chains,
                recovering,
                ..
            } => {
                self.note_claims(from, &vv);
                self.note_ack(from, &vv);
                // A peer that holds no more of our own writes than we do: safe to write.
                if vv.get(&self.actor) <= self.log.vv().get(&self.actor) {
                    self.catching_up = false;
                }
                self.compare_chains(now_ms, from, &vv, &chains);
                let (deltas, more) = self.log.missing_for(
                    &vv,
                    self.config.max_batch_deltas,
                    self.config.max_batch_bytes,
                );
                self.send_deltas(from, deltas, more);
                if reply && (recovering || self.log.vv().lacks_any_of(&vv)) {
                    self.send_summary(from, false);
                }
                Ok(())
            }
            Message::Deltas { deltas, more, .. } => {
                // The last batch answering our summary: we hold what the peer held.
                if !more {
                    self.catching_up = false;
                }
                let before = self.log.vv().total();
                let mut first_err = Ok(());
                // An honest peer never sends a bad delta: the first one ends the batch.
                for d in deltas {
                    if let Err(e) = self.receive(now_ms, from, d, verified) {
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
