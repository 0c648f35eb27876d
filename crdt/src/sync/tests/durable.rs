//! What a replica keeps and refuses across restarts and multi-change edits (issue #11).

use super::*;
use crate::sync::acl::AclChange;

#[test]
fn a_restore_with_a_gap_holds_no_content_its_version_vector_does_not_cover() {
    // Author 1's deltas 1 and 3 reach the disk, 2 does not.
    let mut p = Pump::new(1);
    for n in [1, 10, 100] {
        p.write(0, incr("n", n));
    }
    let disk: Vec<SignedDelta> = p.disks[0]
        .iter()
        .filter(|d| d.seqs.first != 2)
        .cloned()
        .collect();
    let restored = restore_open(9, 1, disk);
    assert_eq!(restored.vv().get(&ActorId::from_index(1)), 1);
    // Before: the document also held delta 3's +100 that nothing said it had.
    assert_eq!(restored.doc().to_json(), serde_json::json!({"n": 1}));
}

#[test]
fn a_multi_change_writers_edit_applies_all_or_nothing() {
    let genesis = Genesis {
        owner: ActorId::from_index(1),
        name: "closed".into(),
        nonce: [0; 16],
        open: false,
        writers: vec![ActorId::from_index(2)],
    };
    let mut o = replica(1).with_acl(Acl::from_genesis(&genesis));
    let before = o.acl().clone();
    // The second change is refused, so the first must not happen either.
    let err = o.handle(
        1_000,
        Input::Admin {
            changes: vec![
                AclChange::Add(ActorId::from_index(3)),
                AclChange::Remove(ActorId::from_index(1)),
            ],
            tag: 7,
        },
    );
    assert_eq!(err, Err(SyncError::OwnerRemoval));
    assert_eq!(o.acl(), &before);
    assert!(o.poll_output().is_none(), "nothing persisted or broadcast");
    // Changes are judged in order: removing and then re-adding a writer is refused.
    let err = o.handle(
        1_000,
        Input::Admin {
            changes: vec![
                AclChange::Remove(ActorId::from_index(2)),
                AclChange::Add(ActorId::from_index(2)),
            ],
            tag: 8,
        },
    );
    assert!(matches!(err, Err(SyncError::RemovedForGood { .. })));
    assert_eq!(o.acl(), &before);
    // A good pair lands as one write.
    o.handle(
        1_000,
        Input::Admin {
            changes: vec![
                AclChange::Add(ActorId::from_index(3)),
                AclChange::Remove(ActorId::from_index(2)),
            ],
            tag: 9,
        },
    )
    .unwrap();
    let persisted: Vec<SignedDelta> = std::iter::from_fn(|| o.poll_output())
        .filter_map(|out| match out {
            Output::Persist { delta, .. } => Some(delta),
            _ => None,
        })
        .collect();
    assert_eq!(persisted.len(), 1);
    assert_eq!(persisted[0].acl.len(), 2);
    assert!(o.acl().may_write(&ActorId::from_index(3)));
    assert!(!o.acl().may_write(&ActorId::from_index(2)));
}

#[test]
fn a_node_that_lost_its_store_adopts_its_own_writes_back_before_writing_again() {
    // Replica 1 writes three times; replica 2 holds them.
    let mut p = Pump::new(2);
    p.connect(0, 1);
    for n in [1, 2, 3] {
        p.write(0, incr("n", n));
    }
    p.settle();
    // Replica 1's store is lost; it joins again with its key and an empty log.
    let reborn = replica(1).catching_up();
    let peer = p.replicas.remove(1);
    let mut q = Pump::of(vec![reborn, peer]);
    // Writing before a replica has answered would sign sequence number 1 a second time.
    q.write(0, incr("n", 100));
    assert_eq!(q.errors.pop(), Some(SyncError::CatchingUp));
    q.connect(0, 1);
    q.settle();
    assert!(!q.replicas[0].is_catching_up());
    assert_eq!(q.replicas[0].vv().get(&ActorId::from_index(1)), 3);
    assert_eq!(q.json(0), serde_json::json!({"n": 6}));
    // Its next write continues after them, and the other replica takes it.
    q.write(0, incr("n", 100));
    assert!(q.errors.is_empty(), "{:?}", q.errors);
    q.settle();
    assert_eq!(q.replicas[1].vv().get(&ActorId::from_index(1)), 4);
    assert_eq!(q.json(1), serde_json::json!({"n": 106}));
    assert_eq!(q.replicas[1].stats().equivocations, 0);
}

#[test]
fn a_joined_replica_writes_once_a_replica_says_it_had_nothing_of_its_own() {
    let mut q = Pump::of(vec![replica(1).catching_up(), replica(2)]);
    q.write(0, incr("n", 1));
    assert_eq!(q.errors.pop(), Some(SyncError::CatchingUp));
    // The replica answers a recovering summary even with nothing to send.
    q.connect(0, 1);
    q.settle();
    assert!(!q.replicas[0].is_catching_up());
    q.write(0, incr("n", 1));
    assert!(q.errors.is_empty(), "{:?}", q.errors);
}

#[test]
fn a_joined_replica_that_never_hears_back_writes_after_a_while() {
    let mut q = Pump::of(vec![replica(1).catching_up(), replica(2)]);
    q.connect(0, 1);
    // The answer is lost.
    q.links[0][1] = false;
    q.links[1][0] = false;
    q.settle();
    assert!(q.replicas[0].is_catching_up());
    q.now += 10_000;
    q.input(0, Input::Tick);
    assert!(!q.replicas[0].is_catching_up());
    q.write(0, incr("n", 1));
    assert!(q.errors.is_empty(), "{:?}", q.errors);
}

#[test]
fn a_failed_persist_undoes_what_was_not_acknowledged_and_a_later_commit_cannot_revive_it() {
    let mut p = Pump::new(2);
    p.connect(0, 1);
    p.write(0, incr("n", 1));
    p.settle();
    assert_eq!(p.acked, [(0, 1)]);
    // Two more writes wait on the disk; the commit fails.
    p.hold_persists = true;
    p.write(0, incr("n", 10));
    p.write(0, incr("n", 100));
    let late = p.held[0].clone();
    p.held[0].clear();
    // The failed batch is reported; a later batch holding the same writes reaches the disk
    // all the same, before the cut the failure asks for.
    p.disks[0].extend(late.iter().map(|(_, d)| d.clone()));
    p.input(0, Input::PersistFailed);
    assert!(
        p.disks[0].iter().all(|d| d.seqs.last <= 1),
        "the undone writes were cut from the disk"
    );
    assert_eq!(p.json(0), serde_json::json!({"n": 1}));
    assert_eq!(p.replicas[0].vv().get(&ActorId::from_index(1)), 1);
    // A commit queued after the failed one lands anyway: it acknowledges nothing, and
    // nothing of it is broadcast.
    let ticket = late.last().map(|(t, _)| *t).unwrap();
    p.input(0, Input::Persisted { ticket });
    assert_eq!(p.acked, [(0, 1)]);
    p.settle();
    assert_eq!(p.json(1), serde_json::json!({"n": 1}));
    // The next write takes the next free sequence number, and reaches the other replica.
    p.hold_persists = false;
    p.write(0, incr("n", 1000));
    p.settle();
    assert_eq!(p.acked, [(0, 1), (0, 2)]);
    assert_eq!(p.json(1), serde_json::json!({"n": 1001}));
}
