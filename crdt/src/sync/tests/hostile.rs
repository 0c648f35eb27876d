//! What one signed message from a hostile writer of an open document can do to a replica:
//! one test per hole found when the replica was read as an attacker would.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::sync::acl::{AclChange, AclOp};

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
fn a_sequence_range_reaching_u64_max_is_refused_not_wrapped() {
    let mut d = one_delta(1, incr("n", 1));
    d.seqs = SeqRange {
        first: 1,
        last: u64::MAX,
    };
    assert!(matches!(
        rejects(resign(d.clone())),
        SyncError::BadSeqRange { .. }
    ));
    // Held back behind a gap, it would have been drained with `last + 1`.
    d.seqs = SeqRange {
        first: 2,
        last: u64::MAX,
    };
    assert!(matches!(rejects(resign(d)), SyncError::BadSeqRange { .. }));
}

#[test]
fn the_same_dot_under_two_keys_is_refused_so_arrival_order_cannot_split_replicas() {
    let good = one_delta(1, incr("x", 1));
    let mut twice = good.clone();
    let mut delta = (*twice.delta).clone();
    let entry = delta.store.0 .0["x"].clone();
    delta.store.0 .0.insert("y".into(), entry);
    twice.delta = Arc::new(delta);
    assert!(matches!(
        rejects(resign(twice)),
        SyncError::Doc {
            source: crate::DocError::RepeatedDot { .. },
            ..
        }
    ));
}

#[test]
fn a_new_delta_reusing_an_old_dot_of_its_author_is_refused() {
    let ds = deltas(1, [incr("x", 1), incr("x", 1)]);
    let mut b = replica(9);
    deliver(&mut b, ds[0].clone()).unwrap();
    // Delta 2 re-sent with delta 1's dot moved to another key.
    let mut reuse = ds[1].clone();
    let mut delta = (*ds[0].delta).clone();
    let entry = delta.store.0 .0.remove("x").unwrap();
    delta.store.0 .0.insert("y".into(), entry);
    reuse.delta = Arc::new(delta);
    let err = deliver(&mut b, resign(reuse)).unwrap_err();
    assert!(matches!(
        err,
        SyncError::Doc {
            source: crate::DocError::StaleDot { .. },
            ..
        }
    ));
    assert_eq!(b.doc().to_json(), serde_json::json!({"x": 1}));
}

#[test]
fn a_context_ahead_of_this_replica_cannot_delete_another_writers_future_writes() {
    // Writer 2 has counted to 3. Writer 1 deletes "n" claiming to have seen four billion
    // of writer 2's dots.
    let honest = deltas(2, [incr("n", 1), incr("n", 1), incr("n", 1)]);
    let mut greedy = one_delta(1, Op::new("n", OpKind::Delete));
    let mut delta = (*greedy.delta).clone();
    delta.ctx.insert_range(ActorId::from_index(2), 1, 1 << 32);
    greedy.delta = Arc::new(delta);
    let greedy = resign(greedy);

    let mut r = replica(9);
    deliver(&mut r, honest[0].clone()).unwrap();
    // Early, not wrong: held back, not applied, not counted against the sender.
    deliver(&mut r, greedy).unwrap();
    assert_eq!(r.stats().buffered, 1);
    assert_eq!(r.stats().rejected, 0);
    assert_eq!(r.vv().get(&ActorId::from_index(1)), 0);
    for d in &honest[1..] {
        deliver(&mut r, d.clone()).unwrap();
    }
    assert_eq!(r.doc().to_json(), serde_json::json!({"n": 3}));
    // Nobody ever writes the claimed dots: the held delta expires.
    r.handle(1_000 + Config::default().pending_ttl_ms, Input::Tick)
        .unwrap();
    assert_eq!(r.stats().expired, 1);
    assert_eq!(r.doc().to_json(), serde_json::json!({"n": 3}));
}

#[test]
fn an_honest_delta_that_arrives_before_what_it_saw_waits_for_it() {
    // Replica 1 writes; replica 2 sees it and deletes the key; a third replica gets the
    // delete first.
    let mut p = Pump::new(2);
    p.connect(0, 1);
    p.write(0, incr("n", 5));
    p.settle();
    p.write(1, Op::new("n", OpKind::Delete));
    p.settle();
    let first = p.replicas[0].deltas().next().cloned().unwrap();
    let delete = p.replicas[1]
        .deltas()
        .find(|d| d.author == ActorId::from_index(2))
        .cloned()
        .unwrap();
    let mut r = replica(9);
    deliver(&mut r, delete).unwrap();
    assert_eq!(r.stats().buffered, 1);
    deliver(&mut r, first).unwrap();
    assert_eq!(r.doc().to_json(), serde_json::json!({}));
    assert_eq!(r.vv(), p.replicas[0].vv());
}

#[test]
fn the_owner_cannot_remove_itself_locally_or_on_the_wire() {
    let owner = ActorId::from_index(1);
    let genesis = Genesis {
        owner,
        name: "closed".into(),
        nonce: [0; 16],
        open: false,
        writers: vec![],
    };
    let mut o = replica(1).with_acl(Acl::from_genesis(&genesis));
    let err = o.handle(
        1_000,
        Input::Admin {
            changes: vec![AclChange::Remove(owner)],
            tag: 0,
        },
    );
    assert_eq!(err, Err(SyncError::OwnerRemoval));
    // A delta carrying the edit anyway (signed by the owner) is refused by the others.
    let mut d = one_delta(1, incr("n", 1));
    d.doc = genesis.id();
    d.acl = vec![AclOp::Remove {
        writer: owner,
        cut: 0,
    }];
    let mut r = Replica::new(
        genesis.id(),
        ActorId::from_index(2),
        Arc::new(TestAuth),
        Config::default(),
        2,
    )
    .with_acl(Acl::from_genesis(&genesis));
    let err = deliver(&mut r, resign(d)).unwrap_err();
    assert_eq!(err, SyncError::OwnerRemoval);
    assert!(r.acl().may_write(&owner));
}

#[test]
fn held_back_deltas_are_bounded_by_bytes_and_expire() {
    let config = Config {
        max_pending_bytes: 4_096,
        ..Config::default()
    };
    let mut r = Replica::new(
        doc_id(),
        ActorId::from_index(9),
        Arc::new(TestAuth),
        config,
        9,
    );
    // Deltas 2.. of a writer whose delta 1 never comes, each about 1 KiB.
    let big = "x".repeat(1_000);
    let ds = deltas(
        1,
        (0..20).map(|i| Op::new(format!("k{i}"), OpKind::Set(big.as_str().into()))),
    );
    for d in &ds[1..] {
        deliver(&mut r, d.clone()).unwrap();
    }
    let held = r.stats().buffered;
    assert!((2..=4).contains(&held), "held {held} deltas in 4 KiB");
    assert_eq!(r.stats().dropped as usize, ds.len() - 1 - held as usize);
    // When delta 1 arrives, what was held applies; the rest comes by anti-entropy.
    deliver(&mut r, ds[0].clone()).unwrap();
    assert_eq!(r.vv().get(&ActorId::from_index(1)), 1 + held);
}

/// Counts signature checks.
#[derive(Default)]
struct CountingAuth(AtomicUsize);

impl Authenticator for CountingAuth {
    fn sign(&self, author: &ActorId, msg: &[u8]) -> Vec<u8> {
        TestAuth.sign(author, msg)
    }

    fn verify(&self, author: &ActorId, msg: &[u8], signature: &[u8]) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed);
        TestAuth.verify(author, msg, signature)
    }
}

#[test]
fn cheap_checks_come_before_signatures_and_verified_messages_skip_them() {
    let genesis = Genesis {
        owner: ActorId::from_index(1),
        name: "closed".into(),
        nonce: [0; 16],
        open: false,
        writers: vec![],
    };
    let auth = Arc::new(CountingAuth::default());
    let mut r = Replica::new(
        genesis.id(),
        ActorId::from_index(1),
        auth.clone(),
        Config::default(),
        1,
    )
    .with_acl(Acl::from_genesis(&genesis));
    // A stranger's deltas: refused as a non-writer without a signature check.
    let mut d = one_delta(5, incr("n", 1));
    d.doc = genesis.id();
    let d = resign(d);
    assert!(matches!(
        deliver(&mut r, d.clone()),
        Err(SyncError::NotAWriter { .. })
    ));
    assert_eq!(auth.0.load(Ordering::Relaxed), 0);
    // A message verified elsewhere is not verified again.
    let mut open = one_delta(2, incr("n", 1));
    open.doc = doc_id();
    let open = resign(open);
    let verified = funnel::verify(Message::Delta(open), &TestAuth, 1 << 20).unwrap();
    let mut o = Replica::new(
        doc_id(),
        ActorId::from_index(3),
        auth.clone(),
        Config::default(),
        3,
    );
    o.handle(
        1_000,
        Input::Verified {
            from: ActorId::from_index(2),
            msg: verified,
        },
    )
    .unwrap();
    assert_eq!(o.doc().to_json(), serde_json::json!({"n": 1}));
    assert_eq!(auth.0.load(Ordering::Relaxed), 0);
    // And the funnel refuses what the replica would.
    let mut forged = one_delta(2, incr("n", 1));
    forged.signature[0] ^= 1;
    assert!(matches!(
        funnel::verify(Message::Delta(forged), &TestAuth, 1 << 20),
        Err(SyncError::BadSignature { .. })
    ));
}

/// Two versions of author 5's first write: `n += 1` and `n += 100`.
fn two_versions() -> (SignedDelta, SignedDelta) {
    (one_delta(5, incr("n", 1)), one_delta(5, incr("n", 100)))
}

#[test]
fn two_versions_of_one_write_are_caught_and_every_replica_cuts_the_author() {
    let mut p = Pump::new(3);
    p.connect(0, 1);
    p.connect(1, 2);
    p.write(0, incr("honest", 1));
    p.settle();
    let (v1, v2) = two_versions();
    // Replica 1 gets one version, replica 3 the other; each applies what it got.
    p.input(
        0,
        Input::Message {
            from: v1.author,
            msg: Message::Delta(v1),
        },
    );
    p.input(
        2,
        Input::Message {
            from: v2.author,
            msg: Message::Delta(v2),
        },
    );
    p.settle();
    for _ in 0..5 {
        for i in 0..3 {
            p.input(i, Input::Tick);
        }
        p.now += 5_000;
        p.settle();
    }
    let author = ActorId::from_index(5);
    for i in 0..3 {
        let r = &p.replicas[i];
        assert_eq!(
            r.vv().get(&author),
            0,
            "replica {i} kept the equivocator's write"
        );
        assert_eq!(p.json(i), serde_json::json!({"honest": 1}), "replica {i}");
    }
    assert_eq!(p.replicas[0].doc().digest(), p.replicas[2].doc().digest());
    assert!(p.replicas.iter().any(|r| r.stats().equivocations > 0));
}

#[test]
fn versions_that_meet_only_in_anti_entropy_are_caught_by_the_chains() {
    // No gossip at all between the two replicas: only summaries, whose version vectors
    // agree, so without the chains nothing would ever be sent.
    let (v1, v2) = two_versions();
    let (mut a, mut b) = (replica(1), replica(2));
    deliver(&mut a, v1).unwrap();
    deliver(&mut b, v2).unwrap();
    assert_eq!(a.vv(), b.vv());
    assert_ne!(a.doc().digest(), b.doc().digest());
    let mut p = Pump::of(vec![a, b]);
    p.connect(0, 1);
    p.settle();
    assert_eq!(p.json(0), serde_json::json!({}));
    assert_eq!(p.json(1), serde_json::json!({}));
}

#[test]
fn a_fold_that_drops_a_write_it_covers_is_evidence() {
    let ds = deltas(5, [incr("a", 1), incr("b", 1), incr("c", 1)]);
    let mut r = replica(9);
    for d in &ds {
        deliver(&mut r, d.clone()).unwrap();
    }
    // A "fold" of writes 1..=3 that leaves out "b".
    let mut fold = ds[0].clone();
    let mut content = (*ds[0].delta).clone();
    content.join_with(&ds[2].delta);
    fold.delta = Arc::new(content);
    fold.seqs = SeqRange { first: 1, last: 3 };
    deliver(&mut r, resign(fold)).unwrap();
    assert_eq!(r.stats().equivocations, 1);
    // Caught: everything the author wrote is dropped.
    assert_eq!(r.vv().get(&ActorId::from_index(5)), 0);
    assert_eq!(r.doc().to_json(), serde_json::json!({}));
}

#[test]
fn an_honest_fold_is_not_evidence() {
    let mut p = Pump::new(2);
    p.connect(0, 1);
    for _ in 0..5 {
        p.write(0, incr("n", 1));
    }
    p.settle();
    p.input(0, Input::Fold);
    p.settle();
    assert_eq!(p.replicas[1].stats().equivocations, 0);
    assert_eq!(p.replicas[1].log_len(), 1);
    assert_eq!(p.json(1), serde_json::json!({"n": 5}));
}

#[test]
fn evidence_that_proves_nothing_is_refused() {
    let (v1, v2) = two_versions();
    let mut r = replica(9);
    // Evidence against an author none of whose writes are held here is not even kept.
    let evidence = |r: &mut Replica, deltas: Vec<SignedDelta>| {
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
    };
    evidence(&mut r, vec![v1.clone(), v2.clone()]).unwrap();
    assert_eq!(r.stats().equivocations, 0);
    deliver(&mut r, v1.clone()).unwrap();
    assert!(matches!(
        evidence(&mut r, vec![v1.clone(), v1.clone()]),
        Err(SyncError::BadEvidence(_))
    ));
    assert!(matches!(
        evidence(&mut r, vec![v1.clone()]),
        Err(SyncError::BadEvidence(_))
    ));
    let other = one_delta(6, incr("n", 1));
    assert!(matches!(
        evidence(&mut r, vec![v1.clone(), other]),
        Err(SyncError::BadEvidence(_))
    ));
    // Forged: a second version nobody signed.
    let mut forged = v2.clone();
    forged.signature[0] ^= 1;
    assert!(matches!(
        evidence(&mut r, vec![v1.clone(), forged]),
        Err(SyncError::BadSignature { .. })
    ));
    assert_eq!(r.stats().equivocations, 0);
    // The real thing.
    evidence(&mut r, vec![v1, v2]).unwrap();
    assert_eq!(r.stats().equivocations, 1);
}

#[test]
fn an_old_write_with_two_versions_is_caught_under_later_writes() {
    // Author 5 writes twice; its first write also exists in a second version. Replica 1
    // holds version one, replica 2 version two, both with write 2 on top: their version
    // vectors agree and so do their newest entries.
    let ds = deltas(5, [incr("n", 1), incr("n", 1)]);
    let mut other = ds[0].clone();
    let mut content = (*other.delta).clone();
    for e in content.store.0 .0.values_mut() {
        for v in e.counter.0 .0.values_mut() {
            v.inc += 1_000;
        }
    }
    other.delta = Arc::new(content);
    let other = resign(other);
    let (mut a, mut b) = (replica(1), replica(2));
    for d in [&ds[0], &ds[1]] {
        deliver(&mut a, d.clone()).unwrap();
    }
    for d in [&other, &ds[1]] {
        deliver(&mut b, d.clone()).unwrap();
    }
    assert_eq!(a.vv(), b.vv());
    let mut p = Pump::of(vec![a, b]);
    p.connect(0, 1);
    p.settle();
    for i in 0..2 {
        assert_eq!(p.json(i), serde_json::json!({}), "replica {i}");
        assert_eq!(p.replicas[i].vv().get(&ActorId::from_index(5)), 0);
    }
}

#[test]
fn a_fold_that_drops_a_value_it_covers_drops_it_on_every_replica() {
    // Writes 1 and 2, then a fold of both whose context covers x's dot but whose store
    // no longer holds x (as if x had been deleted within the fold): not a contradiction
    // of what it covers, so not evidence; every replica must end the same.
    let ds = deltas(5, [incr("x", 1), incr("y", 2)]);
    let mut fold = ds[1].clone();
    let mut content = (*ds[0].delta).clone();
    content.join_with(&ds[1].delta);
    content.store.0 .0.remove("x");
    fold.delta = Arc::new(content);
    fold.seqs = SeqRange { first: 1, last: 2 };
    let fold = resign(fold);
    let mut held = replica(8);
    for d in &ds {
        deliver(&mut held, d.clone()).unwrap();
    }
    deliver(&mut held, fold.clone()).unwrap();
    let mut fresh = replica(9);
    deliver(&mut fresh, fold).unwrap();
    assert_eq!(held.stats().equivocations, 0);
    assert_eq!(held.doc().to_json(), serde_json::json!({"y": 2}));
    assert_eq!(held.doc().digest(), fresh.doc().digest());
    assert_eq!(held.log_len(), 1);
}

#[test]
fn a_fold_over_held_writes_that_brings_a_new_value_is_refused() {
    let ds = deltas(5, [incr("x", 1), incr("y", 2), incr("z", 3)]);
    let mut r = replica(9);
    for d in &ds[..2] {
        deliver(&mut r, d.clone()).unwrap();
    }
    // "A fold of writes 1 and 2" that holds write 3's value (a dot no write it covers made).
    let mut fold = ds[1].clone();
    let mut content = (*ds[0].delta).clone();
    content.join_with(&ds[1].delta);
    content.join_with(&ds[2].delta);
    fold.delta = Arc::new(content);
    fold.seqs = SeqRange { first: 1, last: 2 };
    let err = deliver(&mut r, resign(fold)).unwrap_err();
    assert!(matches!(
        err,
        SyncError::Doc {
            source: crate::DocError::StaleDot { .. },
            ..
        }
    ));
    assert_eq!(r.doc().to_json(), serde_json::json!({"x": 1, "y": 2}));
}

#[test]
fn an_honest_writer_that_saw_a_cut_authors_writes_is_not_stuck_behind_the_cut() {
    // Author 5 writes x; honest writer 2 deletes x having seen it; then 5 is caught
    // equivocating and cut. A replica that learns of the cut before the delete must still
    // take the delete (its context covers dots of 5 that will never be held again).
    let x = one_delta(5, incr("x", 1));
    let mut p = Pump::new(2);
    p.input(
        1,
        Input::Message {
            from: x.author,
            msg: Message::Delta(x.clone()),
        },
    );
    p.write(1, Op::new("x", OpKind::Delete));
    let delete = p.replicas[1]
        .deltas()
        .find(|d| d.author == ActorId::from_index(2))
        .cloned()
        .unwrap();
    let mut r = replica(9);
    deliver(&mut r, x.clone()).unwrap();
    // The same seq 1 of author 5 in another version: caught, cut.
    let mut other = x.clone();
    let mut content = (*other.delta).clone();
    for e in content.store.0 .0.values_mut() {
        for v in e.counter.0 .0.values_mut() {
            v.inc += 7;
        }
    }
    other.delta = Arc::new(content);
    deliver(&mut r, resign(other)).unwrap();
    assert_eq!(r.stats().equivocations, 1);
    deliver(&mut r, delete).unwrap();
    assert_eq!(
        r.stats().buffered,
        0,
        "the delete waits for dots that never come"
    );
    assert_eq!(r.vv().get(&ActorId::from_index(2)), 1);
}
