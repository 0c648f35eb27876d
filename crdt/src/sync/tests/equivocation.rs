//! An author that signs two versions of the same writes is caught, and every replica
//! cuts it the same way; honest folds are not mistaken for it.

use super::*;

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
    for _ in 0..4 {
        p.write(0, incr("n", 1));
    }
    p.settle();
    p.compact(0);
    p.settle();
    assert_eq!(p.replicas[1].stats().equivocations, 0);
    assert_eq!(p.replicas[1].log_len(), 1);
    assert_eq!(p.json(1), serde_json::json!({"n": 4}));
}

#[test]
fn evidence_that_proves_nothing_is_refused() {
    let (v1, v2) = two_versions();
    let mut r = replica(9);
    // Evidence against an author none of whose writes are held here is not even kept.
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
