//! What a replica says for people watching: how many known writes it lacks (peers'
//! claims, bounded) and cuts at a hybrid-clock time for consistent snapshots.

use super::*;

#[test]
fn summaries_say_how_far_behind_a_replica_is_within_bounds_and_only_while_connected() {
    let mut b = replica(2);
    let from = ActorId::from_index(1);
    let summary = |authors: std::ops::Range<u64>, seq: u64| {
        let mut vv = VersionVector::default();
        for i in authors {
            vv.advance(ActorId::from_index(i), seq);
        }
        Message::Summary {
            doc: doc_id(),
            vv,
            reply: false,
            chains: Vec::new(),
            recovering: false,
        }
    };
    // A summary from a peer not connected counts for nothing.
    b.handle(
        1_000,
        Input::Message {
            from,
            msg: summary(1..2, 5),
        },
    )
    .unwrap();
    assert_eq!(b.behind(), 0);
    b.handle(1_000, Input::PeerUp(from)).unwrap();
    b.handle(
        1_000,
        Input::Message {
            from,
            msg: summary(1..2, 5),
        },
    )
    .unwrap();
    assert_eq!(b.behind(), 5);
    // An absurd claim counts only up to the sequence lead deltas are allowed.
    b.handle(
        1_000,
        Input::Message {
            from,
            msg: summary(1..2, u64::MAX),
        },
    )
    .unwrap();
    assert_eq!(b.behind(), Config::default().max_seq_lead);
    // The peer's next summary replaces its claims: of a thousand authors never seen
    // here, a bounded number counts.
    b.handle(
        1_000,
        Input::Message {
            from,
            msg: summary(100..1_100, 1),
        },
    )
    .unwrap();
    assert_eq!(b.behind(), crate::sync::replica::MAX_UNHEARD_AUTHORS as u64);
    // Gone when the peer leaves.
    b.handle(1_000, Input::PeerDown(from)).unwrap();
    assert_eq!(b.behind(), 0);
    assert!(b.claims.is_empty());
}

#[test]
fn a_cut_holds_the_writes_before_it_and_its_marker_keeps_later_writes_out() {
    let mut p = Pump::new(2);
    p.connect(0, 1);
    p.write(0, incr("a", 1));
    p.settle();
    p.now = 2_000;
    p.write(1, incr("b", 1));
    p.settle();
    let (a, b) = (p.replicas[0].actor(), p.replicas[1].actor());

    // Between the two writes: only the first, on both replicas, with equal digests.
    let c0 = p.replicas[0].cut(1_500, p.now).unwrap();
    let c1 = p.replicas[1].cut(1_500, p.now).unwrap();
    assert_eq!((c0.vv.get(&a), c0.vv.get(&b)), (1, 0));
    assert_eq!(c0.vv, c1.vv);
    assert_eq!(c0.digest(doc_id()), c1.digest(doc_id()));
    assert_ne!(c0.digest(doc_id()), p.replicas[0].doc().digest());

    // A cut of everything has the document's own digest.
    let all = p.replicas[1].cut(p.now, p.now).unwrap();
    assert_eq!((all.vv.get(&a), all.vv.get(&b)), (1, 1));
    assert_eq!(all.digest(doc_id()), p.replicas[1].doc().digest());
    assert!(!all.straddled);

    // The marker: once cut at a time ahead of its clock, a replica's next write falls
    // after the cut, so a second cut at the same time is the same.
    let ahead = p.now + 3_000;
    let before = p.replicas[0].cut(ahead, p.now).unwrap();
    p.write(0, incr("a", 1));
    let after = p.replicas[0].cut(ahead, p.now).unwrap();
    assert_eq!(before.vv, after.vv);
    assert_eq!(p.replicas[0].vv().get(&a), 2);

    // A write not yet durable is written: a cut counts it, and its digest is the
    // document's (which holds it).
    p.hold_persists = true;
    p.write(1, incr("b", 1));
    let pending = p.replicas[1].cut(p.now + 1, p.now).unwrap();
    assert_eq!(pending.vv.get(&b), 2);
    assert!(pending.everything);
    assert_eq!(pending.digest(doc_id()), p.replicas[1].doc().digest());

    // A cut too far ahead of the clock is refused.
    assert!(p.replicas[0].cut(p.now + 10_000_000, p.now).is_err());
}
