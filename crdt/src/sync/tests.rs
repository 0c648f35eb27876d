//! Unit tests of the replica state machine, driven by hand through a tiny synchronous
//! network. The many-replica randomized tests live in `tests/sim.rs`.

use std::collections::VecDeque;
use std::sync::Arc;

use super::*;
use crate::doc::{Op, OpKind};
use crate::id::{ActorId, DocId};
use crate::json::Json;
use crate::store::Causal;

mod access;
mod compact;
mod durable;
mod equivocation;
mod hostile;
mod observe;
mod resigning;

fn doc_id() -> DocId {
    DocId::derive(&ActorId::from_index(0), "test", &[0; 16])
}

fn replica(i: u64) -> Replica {
    Replica::new(
        doc_id(),
        ActorId::from_index(i),
        Arc::new(TestAuth),
        Config::default(),
        i,
    )
}

/// Replica `actor` of the open test document rebuilt from `disk` (after a crash).
fn restore_open(actor: u64, seed: u64, disk: Vec<SignedDelta>) -> Replica {
    Replica::restore(
        doc_id(),
        ActorId::from_index(actor),
        Arc::new(TestAuth),
        Config::default(),
        seed,
        Acl::open(),
        disk,
    )
}

/// Replicas wired together: messages are delivered in order, persists complete at once
/// unless `hold_persists` is set.
struct Pump {
    replicas: Vec<Replica>,
    now: u64,
    /// (from, to, message) not yet delivered.
    wire: VecDeque<(usize, usize, Message)>,
    /// Whether a pair may talk (by index).
    links: Vec<Vec<bool>>,
    /// Persists waiting, per replica.
    held: Vec<Vec<(u64, SignedDelta)>>,
    hold_persists: bool,
    disks: Vec<Vec<SignedDelta>>,
    acked: Vec<(usize, u64)>,
    deltas_messages: Vec<usize>,
    errors: Vec<SyncError>,
}

impl Pump {
    fn new(n: u64) -> Self {
        Pump::of((1..=n).map(replica).collect())
    }

    fn of(replicas: Vec<Replica>) -> Self {
        let n = replicas.len();
        Pump {
            replicas,
            now: 1_000,
            wire: VecDeque::new(),
            links: vec![vec![true; n]; n],
            held: vec![Vec::new(); n],
            hold_persists: false,
            disks: vec![Vec::new(); n],
            acked: Vec::new(),
            deltas_messages: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn idx(&self, a: &ActorId) -> usize {
        self.replicas.iter().position(|r| r.actor() == *a).unwrap()
    }

    fn input(&mut self, i: usize, input: Input) {
        if let Err(e) = self.replicas[i].handle(self.now, input) {
            self.errors.push(e);
        }
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        while let Some(o) = self.replicas[i].poll_output() {
            match o {
                Output::Send { to, msg } => {
                    let to = self.idx(&to);
                    if let Message::Deltas { deltas, .. } = &msg {
                        self.deltas_messages.push(deltas.len());
                    }
                    self.wire.push_back((i, to, msg));
                }
                Output::Broadcast(msg) => {
                    for to in 0..self.replicas.len() {
                        if to != i
                            && self.links[i][to]
                            && self.replicas[i]
                                .peers()
                                .any(|p| *p == self.replicas[to].actor())
                        {
                            self.wire.push_back((i, to, msg.clone()));
                        }
                    }
                }
                Output::Persist { ticket, delta } => {
                    self.held[i].push((ticket, delta));
                    if !self.hold_persists {
                        self.flush(i);
                    }
                }
                Output::Truncate { author, after } => {
                    self.disks[i].retain(|d| d.author != author || d.seqs.last <= after)
                }
                Output::Event(Event::Acknowledged { seq, .. }) => self.acked.push((i, seq)),
                Output::Event(_) => {}
            }
        }
    }

    fn flush(&mut self, i: usize) {
        let held = std::mem::take(&mut self.held[i]);
        let Some(last) = held.last().map(|(t, _)| *t) else {
            return;
        };
        self.disks[i].extend(held.into_iter().map(|(_, d)| d));
        self.input(i, Input::Persisted { ticket: last });
    }

    fn connect(&mut self, a: usize, b: usize) {
        self.links[a][b] = true;
        self.links[b][a] = true;
        let (aa, ab) = (self.replicas[a].actor(), self.replicas[b].actor());
        self.input(a, Input::PeerUp(ab));
        self.input(b, Input::PeerUp(aa));
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        self.links[a][b] = false;
        self.links[b][a] = false;
        let (aa, ab) = (self.replicas[a].actor(), self.replicas[b].actor());
        self.input(a, Input::PeerDown(ab));
        self.input(b, Input::PeerDown(aa));
    }

    /// Compacts replica `i` once its writes so far are old enough to fold.
    fn compact(&mut self, i: usize) {
        self.now += replica::MIN_AGE_MS;
        self.input(i, Input::Compact);
    }

    fn write(&mut self, i: usize, op: Op) {
        self.input(i, Input::Write { op, tag: 0 });
    }

    /// Delivers until the wire is empty (bounded).
    fn settle(&mut self) {
        for _ in 0..1_000_000 {
            let Some((from, to, msg)) = self.wire.pop_front() else {
                return;
            };
            if !self.links[from][to] {
                continue;
            }
            let from = self.replicas[from].actor();
            self.input(to, Input::Message { from, msg });
        }
        panic!("network did not settle");
    }

    fn json(&self, i: usize) -> serde_json::Value {
        self.replicas[i].doc().to_json()
    }
}

fn incr(k: &str, n: i64) -> Op {
    Op::new(k, OpKind::Incr(n))
}

#[test]
fn concurrent_writes_on_connected_replicas_converge() {
    let mut p = Pump::new(3);
    p.connect(0, 1);
    p.connect(1, 2);
    p.connect(0, 2);
    p.settle();
    p.write(0, incr("n", 1));
    p.write(1, incr("n", 2));
    p.write(2, Op::new("s", OpKind::Add(vec!["x".into()])));
    p.write(
        1,
        Op::new("title", OpKind::Set(Json::parse_or_string("hi"))),
    );
    p.settle();
    for i in 0..3 {
        assert_eq!(
            p.json(i),
            serde_json::json!({"n": 3, "s": ["x"], "title": "hi"})
        );
        assert_eq!(p.replicas[i].doc().digest(), p.replicas[0].doc().digest());
    }
    assert_eq!(p.acked.len(), 4);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

#[test]
fn a_late_joiner_catches_up_through_anti_entropy_alone_in_bounded_batches() {
    let mut p = Pump::new(2);
    p.links = vec![vec![false; 2]; 2];
    for i in 0..1_000 {
        p.write(0, incr("n", 1));
        if i % 10 == 0 {
            p.write(0, Op::new("s", OpKind::Add(vec![format!("m{i}")])));
        }
    }
    assert!(p.wire.is_empty(), "nothing can be gossiped with no peers");
    p.connect(0, 1);
    p.settle();
    assert_eq!(p.replicas[1].vv(), p.replicas[0].vv());
    assert_eq!(p.json(1)["n"], 1_000);
    assert_eq!(p.replicas[1].doc().digest(), p.replicas[0].doc().digest());
    let max = Config::default().max_batch_deltas;
    assert!(
        p.deltas_messages.len() >= 1_100 / max,
        "expected several batches: {:?}",
        p.deltas_messages
    );
    assert!(p.deltas_messages.iter().all(|n| *n <= max));
}

#[test]
fn anti_entropy_sends_only_what_the_other_lacks() {
    let mut p = Pump::new(2);
    p.connect(0, 1);
    for _ in 0..50 {
        p.write(0, incr("n", 1));
    }
    p.settle();
    p.disconnect(0, 1);
    for _ in 0..10 {
        p.write(0, incr("n", 1));
    }
    p.deltas_messages.clear();
    p.connect(0, 1);
    p.settle();
    assert_eq!(p.deltas_messages, [10]);
    assert_eq!(p.json(1)["n"], 60);
}

#[test]
fn writes_are_acknowledged_broadcast_and_served_only_once_durable() {
    let mut p = Pump::new(2);
    p.connect(0, 1);
    p.settle();
    p.hold_persists = true;
    p.write(0, incr("n", 5));
    assert!(p.acked.is_empty());
    assert!(
        p.wire.is_empty(),
        "an unpersisted write must not be broadcast"
    );
    // The write is visible locally at once.
    assert_eq!(p.json(0)["n"], 5);
    // A summary exchange must not leak it either.
    p.input(
        0,
        Input::Message {
            from: p.replicas[1].actor(),
            msg: Message::Summary {
                doc: doc_id(),
                vv: Default::default(),
                reply: false,
                chains: Vec::new(),
                recovering: false,
            },
        },
    );
    assert!(p.wire.is_empty());
    p.hold_persists = false;
    p.flush(0);
    assert_eq!(p.acked, [(0, 1)]);
    p.settle();
    assert_eq!(p.json(1)["n"], 5);
}

#[test]
fn a_crash_loses_only_unacknowledged_writes_and_sequence_numbers_continue() {
    let mut p = Pump::new(1);
    p.write(0, incr("n", 1));
    p.hold_persists = true;
    p.write(0, incr("n", 10));
    // Crash: rebuild from what reached the disk.
    let disk = p.disks[0].clone();
    let restored = restore_open(1, 9, disk);
    assert_eq!(restored.doc().to_json()["n"], 1);
    assert_eq!(restored.vv().get(&ActorId::from_index(1)), 1);
    p.replicas[0] = restored;
    p.held[0].clear();
    p.hold_persists = false;
    p.write(0, incr("n", 100));
    assert_eq!(p.acked.last(), Some(&(0, 2)));
    assert_eq!(p.json(0)["n"], 101);
}

#[test]
fn out_of_order_deltas_wait_for_the_gap_then_apply() {
    let mut a = Pump::new(1);
    for i in 1..=3 {
        a.write(0, incr("n", i));
    }
    let deltas: Vec<SignedDelta> = a.replicas[0].deltas().cloned().collect();
    let mut b = replica(2);
    let from = ActorId::from_index(1);
    for d in [&deltas[2], &deltas[1]] {
        b.handle(
            1_000,
            Input::Message {
                from,
                msg: Message::Delta(d.clone()),
            },
        )
        .unwrap();
    }
    assert_eq!(b.doc().to_json(), serde_json::json!({}));
    assert_eq!(b.stats().buffered, 2);
    // Three writes of author 1 are known to exist, none applied.
    assert_eq!(b.behind(), 3);
    b.handle(
        1_000,
        Input::Message {
            from,
            msg: Message::Delta(deltas[0].clone()),
        },
    )
    .unwrap();
    assert_eq!(b.doc().to_json()["n"], 6);
    assert_eq!(b.behind(), 0);
    // Duplicates are harmless.
    b.handle(
        1_000,
        Input::Message {
            from,
            msg: Message::Delta(deltas[1].clone()),
        },
    )
    .unwrap();
    assert_eq!(b.doc().to_json()["n"], 6);
    assert_eq!(b.stats().duplicates, 1);
}

fn one_delta(author: u64, op: Op) -> SignedDelta {
    let mut a = Pump::new(author);
    a.write(author as usize - 1, op);
    let d = a.replicas[author as usize - 1]
        .deltas()
        .next()
        .cloned()
        .unwrap();
    d
}

/// Re-signs a tampered delta with its (claimed) author's test key.
fn resign(mut d: SignedDelta) -> SignedDelta {
    d.signature = TestAuth.sign(&d.author, &d.signing_bytes());
    d
}

fn rejects(d: SignedDelta) -> SyncError {
    let mut b = replica(9);
    let before = b.doc().clone();
    let err = b
        .handle(
            1_000,
            Input::Message {
                from: ActorId::from_index(1),
                msg: Message::Delta(d),
            },
        )
        .unwrap_err();
    assert_eq!(b.doc(), &before, "a rejected delta changed the state");
    assert_eq!(b.vv(), &VersionVector::default());
    assert_eq!(b.stats().rejected, 1);
    err
}

use crate::vv::VersionVector;

#[test]
fn a_bad_delta_ends_its_batch_and_costs_nothing_more() {
    let mut a = Pump::new(1);
    for _ in 0..3 {
        a.write(0, incr("n", 1));
    }
    let mut deltas: Vec<SignedDelta> = a.replicas[0].deltas().cloned().collect();
    deltas.insert(1, {
        let mut d = deltas[0].clone();
        d.signature = vec![0; 32];
        d.seqs = SeqRange::one(2);
        d
    });
    let mut b = replica(2);
    let err = b.handle(
        1_000,
        Input::Message {
            from: ActorId::from_index(1),
            msg: Message::Deltas {
                doc: doc_id(),
                deltas,
                more: false,
            },
        },
    );
    assert!(matches!(err, Err(SyncError::BadSignature { .. })));
    // The good delta before it applied; nothing after it was even looked at (an honest
    // peer never sends a bad delta, and anti-entropy asks again for what is missing).
    assert_eq!(b.doc().to_json()["n"], 1);
    assert_eq!(b.stats().rejected, 1);
}

#[test]
fn messages_for_another_document_are_refused() {
    let mut b = replica(1);
    let other = DocId::derive(&ActorId::from_index(5), "x", &[0; 16]);
    let err = b.handle(
        0,
        Input::Message {
            from: ActorId::from_index(2),
            msg: Message::Summary {
                doc: other,
                vv: Default::default(),
                reply: true,
                chains: Vec::new(),
                recovering: false,
            },
        },
    );
    assert!(matches!(err, Err(SyncError::WrongDoc { .. })));
    assert!(b.poll_output().is_none());
}

#[test]
fn a_replica_refuses_its_own_deltas_from_the_future_while_it_has_writes_in_flight() {
    let mut p = Pump::new(1);
    p.write(0, incr("n", 1));
    p.write(0, incr("n", 1));
    let d = p.replicas[0]
        .deltas()
        .find(|d| d.seqs.first == 2)
        .cloned()
        .unwrap();
    let mut me = replica(1);
    // A write of this life, not yet durable, already took sequence number 1.
    me.handle(
        1_000,
        Input::Write {
            op: incr("n", 5),
            tag: 1,
        },
    )
    .unwrap();
    let err = me.handle(
        1_000,
        Input::Message {
            from: ActorId::from_index(2),
            msg: Message::Delta(d),
        },
    );
    assert!(matches!(err, Err(SyncError::OwnDeltaFromFuture { .. })));
}

#[test]
fn messages_round_trip_through_cbor_and_garbage_is_refused() {
    let d = one_delta(1, Op::at(["a", "b"], OpKind::Add(vec!["x".into()])));
    let msgs = [
        Message::Delta(d.clone()),
        Message::Deltas {
            doc: doc_id(),
            deltas: vec![d],
            more: true,
        },
        Message::Summary {
            doc: doc_id(),
            vv: [(ActorId::from_index(1), 3)].into_iter().collect(),
            reply: true,
            chains: Vec::new(),
            recovering: false,
        },
    ];
    for m in msgs {
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }
    assert!(Message::decode(b"\xff\xff garbage").is_err());
    assert!(Message::decode(&vec![0u8; MAX_MESSAGE_BYTES + 1]).is_err());
}

/// Hands `r` evidence (two deltas said to be versions of the same writes) from a peer.
fn evidence(r: &mut Replica, deltas: Vec<SignedDelta>) -> Result<(), SyncError> {
    r.handle(
        1_000,
        Input::Message {
            from: ActorId::from_index(1),
            msg: Message::Evidence {
                doc: doc_id(),
                deltas,
            },
        },
    )
}

/// Delivers one delta to `r` as its author's own message.
fn deliver(r: &mut Replica, d: SignedDelta) -> Result<(), SyncError> {
    r.handle(
        1_000,
        Input::Message {
            from: d.author,
            msg: Message::Delta(d),
        },
    )
}

/// Replica `author`'s first `n` deltas, each one write.
fn deltas(author: u64, ops: impl IntoIterator<Item = Op>) -> Vec<SignedDelta> {
    let mut p = Pump::new(author);
    for op in ops {
        p.write(author as usize - 1, op);
    }
    p.replicas[author as usize - 1].deltas().cloned().collect()
}

#[test]
fn an_idle_replica_needs_no_tick_and_one_with_a_peer_is_due_for_anti_entropy() {
    let mut r = replica(1);
    assert_eq!(
        r.poll_timeout(),
        None,
        "alone and idle: nothing is ever due"
    );
    r.handle(1_000, Input::PeerUp(ActorId::from_index(2)))
        .unwrap();
    while r.poll_output().is_some() {}
    let due = r.poll_timeout().expect("a peer: anti-entropy is due");
    // Ticked when due, the next round is an interval later, not at once again.
    let now = due.max(1_000);
    r.handle(now, Input::Tick).unwrap();
    while r.poll_output().is_some() {}
    assert_eq!(
        r.poll_timeout(),
        Some(now + Config::default().anti_entropy_interval_ms)
    );
}
