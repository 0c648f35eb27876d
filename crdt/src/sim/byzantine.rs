//! Byzantine authors: writers of the (open) simulated document that sign hostile deltas
//! with their own valid keys and inject them into honest replicas, mixed into honest
//! traffic.
//!
//! Each keeps a document of its own writes and signs the next delta of its run in one of
//! the ways [`Attack`] lists. Only the honest kinds and equivocation advance its run;
//! every other kind reuses the next sequence number, so its stream keeps being tested
//! rather than stalling behind one refused delta. Its honest writes touch only keys of its
//! own (`b*`): the simulator's model checks that no acknowledged honest write is lost, so
//! any effect on the honest keys (`g`, `c`) is a failure.

use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::clock::Timestamp;
use crate::doc::{Delta, Doc, Op, OpKind};
use crate::id::{ActorId, DocId};
use crate::json::Json;
use crate::sync::{Authenticator, Message, SeqRange, SignedDelta, TestAuth};

/// What a Byzantine author does with its next delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attack {
    /// A valid write to its own keys.
    Honest,
    /// The same dot under two keys.
    RepeatedDot,
    /// A delete of the honest keys whose context claims a million dots of an honest writer
    /// that nobody has written.
    ContextAhead,
    /// A sequence range reaching `u64::MAX`.
    HugeSeq,
    /// Two different deltas with one sequence number, to two different replicas.
    Equivocate,
    /// A new sequence number reusing the dot of an earlier write, under another key.
    StaleDot,
    /// A valid delta with one bit of its signature flipped.
    BadSignature,
}

const ATTACKS: [Attack; 7] = [
    Attack::Honest,
    Attack::RepeatedDot,
    Attack::ContextAhead,
    Attack::HugeSeq,
    Attack::Equivocate,
    Attack::StaleDot,
    Attack::BadSignature,
];

pub(super) struct Byzantine {
    pub(super) actor: ActorId,
    doc: Doc,
    /// Sequence number of its next delta.
    seq: u64,
    /// Its last accepted write's content, for [`Attack::StaleDot`].
    last: Option<Arc<Delta>>,
}

impl Byzantine {
    pub(super) fn new(doc: DocId, actor: ActorId) -> Self {
        Byzantine {
            actor,
            doc: Doc::new(doc),
            seq: 1,
            last: None,
        }
    }

    fn sign(&self, seqs: SeqRange, now_ms: u64, delta: Arc<Delta>) -> SignedDelta {
        let mut d = SignedDelta {
            doc: self.doc.id(),
            author: self.actor,
            seqs,
            hlc: Timestamp::at(now_ms),
            delta,
            acl: Vec::new(),
            signature: Vec::new(),
        };
        d.signature = TestAuth.sign(&self.actor, &d.signing_bytes());
        d
    }

    /// A valid next write to its own keys, not yet taken into its run.
    fn write(&self, now_ms: u64, rng: &mut ChaCha8Rng) -> Delta {
        let op = match rng.random_range(0..3) {
            0 => Op::new("bc", OpKind::Incr(rng.random_range(1..=5))),
            1 => Op::new("bs", OpKind::Add(vec![format!("m{}", self.seq)])),
            _ => Op::new(
                "br",
                OpKind::Set(Json::parse_or_string(&self.seq.to_string())),
            ),
        };
        self.doc
            .prepare(self.actor, Timestamp::at(now_ms), &op)
            .expect("writes to its own keys of fixed kinds")
    }

    fn advance(&mut self, delta: &Arc<Delta>) {
        self.doc.apply(delta);
        self.seq += 1;
        self.last = Some(delta.clone());
    }

    /// The messages of one attack at `now_ms`: one, or two for [`Attack::Equivocate`]
    /// (meant for two different replicas). `honest` names writers it may claim to have
    /// seen.
    pub(super) fn attack(
        &mut self,
        now_ms: u64,
        rng: &mut ChaCha8Rng,
        honest: &[ActorId],
    ) -> (Attack, Vec<Message>) {
        let attack = ATTACKS[rng.random_range(0..ATTACKS.len())];
        let one = SeqRange::one(self.seq);
        let mut content = self.write(now_ms, rng);
        let msgs = match attack {
            Attack::Honest => {
                let content = Arc::new(content);
                let d = self.sign(one, now_ms, content.clone());
                self.advance(&content);
                vec![d]
            }
            Attack::RepeatedDot => {
                if let Some((_, e)) = content.store.0 .0.iter().next() {
                    let e = e.clone();
                    content.store.0 .0.insert("bdup".into(), e);
                }
                vec![self.sign(one, now_ms, Arc::new(content))]
            }
            Attack::ContextAhead => {
                let victim = honest[rng.random_range(0..honest.len())];
                let key = if rng.random_bool(0.5) { "g" } else { "c" };
                let mut delete = self
                    .doc
                    .prepare(
                        self.actor,
                        Timestamp::default(),
                        &Op::new(key, OpKind::Delete),
                    )
                    .expect("a delete always prepares");
                delete
                    .ctx
                    .insert_range(victim, 1, (1 << 20) + rng.random_range(0..1_000));
                vec![self.sign(one, now_ms, Arc::new(delete))]
            }
            Attack::HugeSeq => {
                let seqs = SeqRange {
                    first: self.seq,
                    last: u64::MAX,
                };
                vec![self.sign(seqs, now_ms, Arc::new(content))]
            }
            Attack::Equivocate => {
                let first = Arc::new(content.clone());
                // The same dots with other values: a counter that says 1,000 more.
                for e in content.store.0 .0.values_mut() {
                    for v in e.counter.0 .0.values_mut() {
                        v.inc += 1_000;
                    }
                    for (_, v) in e.register.0 .0.values_mut() {
                        *v = Json::parse_or_string("\"other\"");
                    }
                }
                if content == *first {
                    // A set add has no value to vary: move its member instead.
                    if let Some((k, e)) = content.store.0 .0.pop_first() {
                        let mut e = e;
                        if let Some((_, dots)) = e.set.0 .0.pop_first() {
                            e.set.0 .0.insert("other".into(), dots);
                        }
                        content.store.0 .0.insert(k, e);
                    }
                }
                let a = self.sign(one, now_ms, first.clone());
                let b = self.sign(one, now_ms, Arc::new(content));
                self.advance(&first);
                vec![a, b]
            }
            Attack::StaleDot => match &self.last {
                Some(old) => {
                    let mut reused = (**old).clone();
                    let moved: Vec<_> = std::mem::take(&mut reused.store.0 .0)
                        .into_iter()
                        .map(|(k, e)| (format!("{k}-again"), e))
                        .collect();
                    reused.store.0 .0 = moved.into_iter().collect();
                    vec![self.sign(one, now_ms, Arc::new(reused))]
                }
                // Nothing to reuse yet: an honest write instead.
                None => {
                    let content = Arc::new(content);
                    let d = self.sign(one, now_ms, content.clone());
                    self.advance(&content);
                    vec![d]
                }
            },
            Attack::BadSignature => {
                let mut d = self.sign(one, now_ms, Arc::new(content));
                d.signature[0] ^= 1;
                vec![d]
            }
        };
        (attack, msgs.into_iter().map(Message::Delta).collect())
    }
}
