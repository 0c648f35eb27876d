//! What goes into and comes out of a [`super::Replica`]: its configuration, inputs,
//! outputs, events, errors and counters.

use super::acl::AclChange;
use super::funnel::Verified;
use super::message::{Message, SeqRange, SignedDelta};
use crate::clock::ClockError;
use crate::doc::{DocError, Op};
use crate::id::{ActorId, DocId};

/// Tunables; the defaults suit a node on a LAN or the Internet.
#[derive(Clone, Debug)]
pub struct Config {
    /// Remote clocks further ahead than this are refused.
    pub max_clock_drift_ms: u64,
    /// How often a replica starts anti-entropy with a random peer.
    pub anti_entropy_interval_ms: u64,
    /// Deltas per anti-entropy batch.
    pub max_batch_deltas: usize,
    /// Bytes per anti-entropy batch (a single larger delta still goes alone).
    pub max_batch_bytes: usize,
    /// Deltas held back (out of order, or covering dots not seen yet) while waiting; beyond
    /// this many, or [`Config::max_pending_bytes`], they are dropped and anti-entropy
    /// fetches them again later.
    pub max_pending: usize,
    /// Bytes of held-back deltas, all authors together.
    pub max_pending_bytes: usize,
    /// A held-back delta is dropped after this long (anti-entropy brings it again).
    pub pending_ttl_ms: u64,
    /// A delta starting more than this many sequence numbers past what is held is refused.
    pub max_seq_lead: u64,
    /// A delta whose context reaches more than this many of its author's own dots past
    /// what is held is refused. (Other actors' dots may not lead at all: see
    /// [`crate::check`].)
    pub max_dot_lead: u64,
    /// Largest encoded delta accepted or produced.
    pub max_delta_bytes: usize,
    /// A peer replica unheard of for this long stops holding compaction back (see
    /// [`super::Replica::stable_cut`]); when it returns it catches up from the folds.
    pub compaction_horizon_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_clock_drift_ms: 60_000,
            anti_entropy_interval_ms: 3_000,
            max_batch_deltas: 256,
            max_batch_bytes: 1 << 20,
            max_pending: 1_024,
            max_pending_bytes: 8 << 20,
            pending_ttl_ms: 60_000,
            max_seq_lead: 1 << 20,
            max_dot_lead: 1 << 40,
            max_delta_bytes: 1 << 20,
            compaction_horizon_ms: 30 * 24 * 3_600_000,
        }
    }
}

/// What happens to a replica.
#[derive(Clone, Debug)]
pub enum Input {
    /// A local write; `tag` comes back in [`Event::Acknowledged`].
    Write { op: Op, tag: u64 },
    /// The owner edits the access list of a closed document, all changes in one write (all
    /// or none); acknowledged like a write.
    Admin { changes: Vec<AclChange>, tag: u64 },
    /// A message from a peer; the replica runs every check of [`super::funnel`].
    Message { from: ActorId, msg: Message },
    /// A message from a peer that already passed [`super::funnel::verify`] (shape and
    /// signatures), so the replica runs only the checks that need its state.
    Verified { from: ActorId, msg: Verified },
    /// A replica of this document is now reachable.
    PeerUp(ActorId),
    /// A replica is no longer reachable.
    PeerDown(ActorId),
    /// Start an exchange with this replica now (its summary differs from ours, as the
    /// driver found by comparing [`super::Replica::state_digest`]s).
    Reconcile(ActorId),
    /// This replica's peer holds exactly what this replica holds (the driver found their
    /// [`super::Replica::state_digest`]s equal): as good as a summary, for compaction.
    PeerHolds(ActorId),
    /// Every [`Output::Persist`] up to and including `ticket` is durable.
    Persisted { ticket: u64 },
    /// A persist failed. Every local write not yet acknowledged is refused
    /// ([`Event::Refused`]) and undone here, and the driver is asked to delete this
    /// replica's own stored deltas past the last acknowledged one ([`Output::Truncate`]),
    /// so a later commit of one of them can never bring it back.
    PersistFailed,
    /// Time passes; starts periodic anti-entropy when due.
    Tick,
    /// Compact: fold this replica's own deltas, leaving out its values that are dead at
    /// the stable cut (see [`super::Replica::stable_cut`]). Each fold is persisted, then
    /// replaces what it covers here and, once broadcast, on every replica.
    Compact,
}

/// What the replica asks its driver to do, in order.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send to one peer.
    Send {
        to: ActorId,
        msg: Message,
    },
    /// Publish to every replica (the document's gossip topic).
    Broadcast(Message),
    /// Make `delta` durable, then report `Persisted { ticket }`. It replaces every stored
    /// delta of the same author whose sequence range it covers (a fold).
    Persist {
        ticket: u64,
        delta: SignedDelta,
    },
    /// Delete every stored delta of `author` that reaches past sequence number `after`:
    /// the owner removed that writer, and those deltas are invalid everywhere.
    Truncate {
        author: ActorId,
        after: u64,
    },
    Event(Event),
}

/// Things a driver may want to tell a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The local write tagged `tag` is durable; it has sequence number `seq`.
    Acknowledged { tag: u64, seq: u64 },
    /// A delta changed (or may have changed) the document.
    Applied {
        author: ActorId,
        seqs: SeqRange,
        /// The delta's hybrid logical clock: when it was written (or folded).
        hlc: crate::Timestamp,
        local: bool,
    },
    /// The local write tagged `tag` will never be acknowledged: this replica's author was
    /// removed from the writers before it became durable.
    Refused { tag: u64 },
    /// `author` was removed from the writers, or caught equivocating; its deltas past
    /// `after` were dropped and the document rebuilt without them.
    Truncated { author: ActorId, after: u64 },
    /// `author` signed two versions of the same writes; everything it wrote past `cut` is
    /// refused from now on.
    Equivocated { author: ActorId, cut: u64 },
}

/// A write or message the replica refused. The replica's state is unchanged by it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("message for document {got}, but this replica holds {expected}")]
    WrongDoc { expected: DocId, got: DocId },
    #[error("invalid sequence range {first}..={last}")]
    BadSeqRange { first: u64, last: u64 },
    #[error("bad signature on delta {first}..={last} by {author}")]
    BadSignature {
        author: ActorId,
        first: u64,
        last: u64,
    },
    #[error("delta from {author} starts at {seq}, more than {max_lead} past the {known} held")]
    SeqTooFarAhead {
        author: ActorId,
        seq: u64,
        known: u64,
        max_lead: u64,
    },
    #[error("a peer sent this replica's own delta {seq}, which it never wrote (it holds {known})")]
    OwnDeltaFromFuture { seq: u64, known: u64 },
    #[error("delta of {size} bytes exceeds the limit of {max}")]
    DeltaTooLarge { size: usize, max: usize },
    #[error("invalid delta from {author}: {source}")]
    Doc { author: ActorId, source: DocError },
    #[error("delta clock refused: {0}")]
    Clock(#[from] ClockError),
    #[error("{author} is not a writer of this document")]
    NotAWriter { author: ActorId },
    #[error("only the document's owner may change its writers")]
    NotOwner,
    #[error("the owner cannot remove itself from its own document")]
    OwnerRemoval,
    #[error(
        "catching up with the document's replicas first (this node may have written to it \
         before); try again once a replica has answered"
    )]
    CatchingUp,
    #[error("evidence of equivocation that proves nothing: {0}")]
    BadEvidence(&'static str),
    #[error("the document is open: anyone may write, there are no writers to edit")]
    OpenDocument,
    #[error("{writer} was removed from the writers; removal is permanent")]
    RemovedForGood { writer: ActorId },
    #[error("invalid write: {0}")]
    Write(#[from] DocError),
}

impl SyncError {
    /// True if only a faulty or hostile peer sends this: a malformed, badly signed or
    /// self-contradicting message. False for what an honest peer may send because it knows
    /// more or less than this replica (a writer whose admission has not arrived yet, a
    /// clock at the edge of the drift, a delta that arrived before what it depends on):
    /// such refusals must not count against it.
    pub fn is_peers_fault(&self) -> bool {
        match self {
            SyncError::WrongDoc { .. }
            | SyncError::BadSeqRange { .. }
            | SyncError::BadSignature { .. }
            | SyncError::DeltaTooLarge { .. }
            | SyncError::NotOwner
            | SyncError::OwnerRemoval
            | SyncError::BadEvidence(_) => true,
            SyncError::Doc { source, .. } => matches!(
                source,
                DocError::TooDeep { .. }
                    | DocError::DotOutsideContext { .. }
                    | DocError::ForeignDot { .. }
                    | DocError::RepeatedDot { .. }
                    | DocError::CounterEntryTooLarge { .. }
                    | DocError::Counter(_)
            ),
            _ => false,
        }
    }
}

/// Counters of what the replica has done, for metrics and simulation reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub applied: u64,
    pub duplicates: u64,
    pub buffered: u64,
    pub dropped: u64,
    /// Held-back deltas dropped because they waited longer than the TTL.
    pub expired: u64,
    /// Authors caught signing two versions of the same writes.
    pub equivocations: u64,
    pub rejected: u64,
    pub folded: u64,
}
