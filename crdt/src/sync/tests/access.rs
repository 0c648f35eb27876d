//! Closed documents: only writers write, the owner edits the writers, and removing a
//! writer converges whatever order replicas learn of it.

use super::*;

/// The rules of a closed document owned by replica 1, with `writers` besides it.
pub(super) fn genesis(writers: &[u64]) -> Acl {
    Acl::from_genesis(&Genesis {
        owner: ActorId::from_index(1),
        name: "closed".into(),
        nonce: [0; 16],
        open: false,
        writers: writers.iter().map(|w| ActorId::from_index(*w)).collect(),
    })
}

/// Replicas 1..=n of that document.
fn closed(n: u64, writers: &[u64]) -> Pump {
    let mut p = Pump::of(
        (1..=n)
            .map(|i| replica(i).with_acl(genesis(writers)))
            .collect(),
    );
    for a in 0..p.replicas.len() {
        for b in a + 1..p.replicas.len() {
            p.connect(a, b);
        }
    }
    p.settle();
    p
}

fn admin(p: &mut Pump, i: usize, change: AclChange) {
    p.input(
        i,
        Input::Admin {
            changes: vec![change],
            tag: 0,
        },
    );
}

#[test]
fn a_non_writer_is_refused_locally_and_its_deltas_everywhere() {
    let mut p = closed(3, &[2]);
    p.write(2, incr("n", 1));
    assert_eq!(
        p.errors.pop(),
        Some(SyncError::NotAWriter {
            author: ActorId::from_index(3)
        })
    );
    // Replica 3 signs a delta with its own key anyway and sends it around.
    let mut outsider = replica(3);
    outsider
        .handle(
            1_000,
            Input::Write {
                op: incr("n", 5),
                tag: 0,
            },
        )
        .unwrap();
    let Some(Output::Persist { delta, .. }) = outsider.poll_output() else {
        panic!("no delta");
    };
    for to in 0..2 {
        let before = p.replicas[to].doc().clone();
        let err = p.replicas[to]
            .handle(
                1_000,
                Input::Message {
                    from: ActorId::from_index(3),
                    msg: Message::Delta(delta.clone()),
                },
            )
            .unwrap_err();
        assert_eq!(
            err,
            SyncError::NotAWriter {
                author: delta.author
            }
        );
        assert_eq!(p.replicas[to].doc(), &before);
    }
    // A writer that is not the owner cannot edit the writers, locally or on the wire.
    admin(&mut p, 1, AclChange::Add(ActorId::from_index(3)));
    assert_eq!(p.errors.pop(), Some(SyncError::NotOwner));
    let mut forged = delta.clone();
    forged.author = ActorId::from_index(2);
    forged.acl = vec![AclOp::Add(ActorId::from_index(3))];
    forged.delta = Default::default();
    let err = p.replicas[0]
        .handle(
            1_000,
            Input::Message {
                from: ActorId::from_index(2),
                msg: Message::Delta(resign(forged)),
            },
        )
        .unwrap_err();
    assert_eq!(err, SyncError::NotOwner);
    // The writer and the owner write; everyone converges, the outsider's 5 nowhere.
    p.write(1, incr("n", 2));
    p.write(0, incr("n", 1));
    p.settle();
    for i in 0..3 {
        assert_eq!(p.json(i), serde_json::json!({"n": 3}));
    }
}

#[test]
fn an_added_writer_writes_and_everyone_accepts_it() {
    let mut p = closed(3, &[]);
    admin(&mut p, 0, AclChange::Add(ActorId::from_index(3)));
    p.settle();
    p.write(2, incr("n", 4));
    p.settle();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    for i in 0..3 {
        assert_eq!(p.json(i), serde_json::json!({"n": 4}));
    }
}

#[test]
fn removing_a_writer_cuts_it_at_the_same_point_on_every_replica() {
    let mut p = closed(3, &[2]);
    for _ in 0..3 {
        p.write(1, incr("n", 1));
    }
    p.settle();
    // The owner is cut off; the writer goes on writing, and only replica 3 hears it.
    p.disconnect(0, 1);
    p.disconnect(0, 2);
    p.write(1, incr("n", 10));
    p.write(1, incr("n", 10));
    p.settle();
    assert_eq!(p.json(2), serde_json::json!({"n": 23}));
    // Meanwhile the owner removes the writer, holding only its first three writes.
    admin(&mut p, 0, AclChange::Remove(ActorId::from_index(2)));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    p.connect(0, 1);
    p.connect(0, 2);
    p.settle();
    for i in 0..3 {
        assert_eq!(p.json(i), serde_json::json!({"n": 3}), "replica {i}");
        assert_eq!(p.replicas[i].vv().get(&ActorId::from_index(2)), 3);
        assert!(p.disks[i]
            .iter()
            .all(|d| d.author != ActorId::from_index(2) || d.seqs.last <= 3));
    }
    // The removed writer is refused locally from now on, and cannot be re-added.
    p.write(1, incr("n", 1));
    assert!(matches!(p.errors.pop(), Some(SyncError::NotAWriter { .. })));
    admin(&mut p, 0, AclChange::Add(ActorId::from_index(2)));
    assert!(matches!(
        p.errors.pop(),
        Some(SyncError::RemovedForGood { .. })
    ));
    // A restart rebuilds the same state from disk.
    let restored = Replica::restore(
        doc_id(),
        ActorId::from_index(3),
        Arc::new(TestAuth),
        Config::default(),
        1,
        genesis(&[2]),
        p.disks[2].clone(),
    );
    assert_eq!(restored.doc().to_json(), serde_json::json!({"n": 3}));
}

#[test]
fn open_documents_have_no_writers_to_edit() {
    let mut p = Pump::new(1);
    admin(&mut p, 0, AclChange::Add(ActorId::from_index(2)));
    assert_eq!(p.errors.pop(), Some(SyncError::OpenDocument));
}
