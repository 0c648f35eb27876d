//! What one signed message from a hostile writer of an open document can do to a replica:
//! one test per hole found when the replica was read as an attacker would.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::sync::acl::{AclChange, AclOp};

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

#[test]
fn forged_and_hostile_deltas_are_rejected_and_change_nothing() {
    let good = one_delta(1, incr("n", 1));

    let mut bad_sig = good.clone();
    bad_sig.signature[0] ^= 1;
    assert!(matches!(rejects(bad_sig), SyncError::BadSignature { .. }));

    let mut other_doc = good.clone();
    other_doc.doc = DocId::derive(&ActorId::from_index(0), "other", &[0; 16]);
    assert!(matches!(
        rejects(resign(other_doc)),
        SyncError::WrongDoc { .. }
    ));

    let mut far = good.clone();
    far.seqs = SeqRange::one(1 << 40);
    assert!(matches!(
        rejects(resign(far)),
        SyncError::SeqTooFarAhead { .. }
    ));

    let mut backwards = good.clone();
    backwards.seqs = SeqRange { first: 5, last: 2 };
    assert!(matches!(
        rejects(resign(backwards)),
        SyncError::BadSeqRange { .. }
    ));

    // Author 2 claims a write whose dot belongs to author 1.
    let mut impostor = good.clone();
    impostor.author = ActorId::from_index(2);
    assert!(matches!(
        rejects(resign(impostor)),
        SyncError::Doc {
            source: crate::DocError::ForeignDot { .. },
            ..
        }
    ));

    // A counter entry beyond the limit.
    let mut overflow = good.clone();
    let mut delta = (*overflow.delta).clone();
    for e in delta.store.0 .0.values_mut() {
        for v in e.counter.0 .0.values_mut() {
            v.inc = u64::MAX;
        }
    }
    overflow.delta = Arc::new(delta);
    assert!(matches!(
        rejects(resign(overflow)),
        SyncError::Doc {
            source: crate::DocError::CounterEntryTooLarge { .. },
            ..
        }
    ));

    // A register from the year 9999.
    let future = one_delta(1, Op::new("r", OpKind::Set(Json::parse_or_string("x"))));
    let mut delta: Causal<crate::map::Map> = (*future.delta).clone();
    for e in delta.store.0 .0.values_mut() {
        for v in e.register.0 .0.values_mut() {
            v.0.millis = 253_402_300_799_000;
        }
    }
    let mut future = future;
    future.delta = Arc::new(delta);
    assert!(matches!(
        rejects(resign(future)),
        SyncError::Doc {
            source: crate::DocError::Clock(_),
            ..
        }
    ));

    // A delta whose author clock is from the year 9999.
    let mut clock = good.clone();
    clock.hlc.millis = 253_402_300_799_000;
    assert!(matches!(rejects(resign(clock)), SyncError::Clock(_)));
}
