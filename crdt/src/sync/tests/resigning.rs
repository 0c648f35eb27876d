//! Compaction's re-signings as a receiver judges them: which version of an author's
//! writes replaces which, and which two versions are evidence of equivocation.

use super::compact::set;
use super::*;
use crate::store::DotStore;

/// `d` re-signed by its author with every value left out (as compaction leaves out values
/// dead everywhere).
fn all_values_left_out(d: &SignedDelta) -> SignedDelta {
    let mut d = d.clone();
    let mut delta = (*d.delta).clone();
    let dots = delta.store.dots();
    delta.join_exact(&Causal {
        store: Default::default(),
        ctx: dots,
    });
    d.delta = Arc::new(delta);
    resign(d)
}

#[test]
fn a_thinned_re_signing_is_not_evidence_but_a_changed_value_still_is() {
    let original = one_delta(5, set("k", "value"));
    let thin = all_values_left_out(&original);
    // Whichever arrives first, the thinner version ends up held, and nobody is cut.
    for order in [[&original, &thin], [&thin, &original]] {
        let mut r = replica(9);
        for d in order {
            deliver(&mut r, d.clone()).unwrap();
        }
        assert_eq!(r.stats().equivocations, 0);
        assert_eq!(r.deltas().next().unwrap().signature, thin.signature);
        assert_eq!(r.doc().to_json(), serde_json::json!({}));
        assert!(matches!(
            evidence(&mut r, vec![original.clone(), thin.clone()]),
            Err(SyncError::BadEvidence(_))
        ));
        assert_eq!(r.stats().equivocations, 0);
    }
    // The same writes re-signed with another value are two versions: caught.
    let changed = {
        let other = one_delta(5, set("k", "other"));
        let mut d = original.clone();
        d.delta = other.delta.clone();
        resign(d)
    };
    let mut r = replica(9);
    deliver(&mut r, original.clone()).unwrap();
    deliver(&mut r, changed).unwrap();
    assert_eq!(r.stats().equivocations, 1);
}

#[test]
fn a_re_signing_that_also_covers_dead_dots_of_others_is_not_evidence_but_an_incomparable_one_is() {
    // Author 6 overwrote author 5's value; author 6's write re-signed with its own value
    // left out and its context grown by another of 5's dots (as compaction covers dots
    // dead at the stable cut) is the same writes, compacted.
    let other = one_delta(5, set("j", "x"));
    let original = one_delta(6, set("k", "value"));
    let grown = {
        let mut d = all_values_left_out(&original);
        let mut delta = (*d.delta).clone();
        delta.ctx.union(&other.delta.ctx);
        d.delta = Arc::new(delta);
        resign(d)
    };
    for order in [[&original, &grown], [&grown, &original]] {
        let mut r = replica(9);
        deliver(&mut r, other.clone()).unwrap();
        for d in order {
            deliver(&mut r, d.clone()).unwrap();
        }
        assert_eq!(r.stats().equivocations, 0);
        assert_eq!(
            r.deltas()
                .filter(|d| d.signature == grown.signature)
                .count(),
            1
        );
        assert!(r.deltas().all(|d| d.signature != original.signature));
        assert!(matches!(
            evidence(&mut r, vec![original.clone(), grown.clone()]),
            Err(SyncError::BadEvidence(_))
        ));
    }
    // One version growing the context, the other leaving the value out: neither is the
    // other compacted (honest re-signings only ever grow both ways at once), so this is
    // two versions of the same write.
    let kept = {
        let mut d = original.clone();
        let mut delta = (*d.delta).clone();
        delta.ctx.union(&other.delta.ctx);
        d.delta = Arc::new(delta);
        resign(d)
    };
    let thin = all_values_left_out(&original);
    let mut r = replica(9);
    deliver(&mut r, other.clone()).unwrap();
    deliver(&mut r, thin).unwrap();
    deliver(&mut r, kept).unwrap();
    assert_eq!(r.stats().equivocations, 1);
    // A version with a smaller context and the same values as one held is an older
    // version of it, not evidence.
    let mut r = replica(9);
    deliver(&mut r, other.clone()).unwrap();
    deliver(&mut r, grown.clone()).unwrap();
    let shrunk = {
        let mut d = grown.clone();
        let mut delta = (*d.delta).clone();
        let mut ctx = crate::ctx::CausalContext::new();
        for (a, ranges) in original.delta.ctx.iter() {
            for &(lo, hi) in ranges {
                ctx.insert_range(*a, lo, hi);
            }
        }
        delta.ctx = ctx;
        d.delta = Arc::new(delta);
        resign(d)
    };
    deliver(&mut r, shrunk).unwrap();
    assert_eq!(r.stats().equivocations, 0);
    assert!(r.deltas().any(|d| d.signature == grown.signature));
}

/// A fold of `parts` (consecutive entries of one author) that also holds `back`'s values,
/// whatever the parts left out or removed.
fn fold_bringing_back(parts: &[&SignedDelta], back: &SignedDelta) -> SignedDelta {
    let mut joined = crate::doc::Delta::default();
    for p in parts {
        joined.join_exact(&p.delta);
    }
    let mut with = Causal {
        store: back.delta.store.clone(),
        ctx: back.delta.ctx.clone(),
    };
    with.join_exact(&Causal {
        store: joined.store.clone(),
        ctx: Default::default(),
    });
    with.ctx = joined.ctx;
    let mut d = (*parts[parts.len() - 1]).clone();
    d.seqs = SeqRange {
        first: parts[0].seqs.first,
        last: d.seqs.last,
    };
    d.delta = Arc::new(with);
    resign(d)
}

#[test]
fn a_fold_that_brings_back_a_value_a_held_entry_left_out_or_removed_is_evidence() {
    // A replica that joined the entry keeps the value out; one that got only the fold
    // would show it: the states would part for good. An honest author folds what its own
    // log holds, never a fatter version of what it sent.
    let mut a = Pump::new(1);
    a.write(0, set("k", "old"));
    a.write(0, set("k", "new"));
    a.write(0, incr("n", 1));
    let e: Vec<SignedDelta> = a.replicas[0].deltas().cloned().collect();

    // The first write held thinned (its value dead everywhere), and a fold over it made
    // from the unthinned version (as by an author restored from an old backup).
    let thin = all_values_left_out(&e[0]);
    let fat = fold_bringing_back(&[&e[0], &e[1]], &e[0]);
    let mut r = replica(9);
    deliver(&mut r, thin).unwrap();
    deliver(&mut r, e[1].clone()).unwrap();
    deliver(&mut r, fat).unwrap();
    assert_eq!(r.stats().equivocations, 1);

    // A fold of the second and third writes holding the value the second one overwrote.
    let revived = fold_bringing_back(&[&e[1], &e[2]], &e[0]);
    assert_eq!(
        revived.delta.store.dots().intersection_len(&e[0].delta.ctx),
        1
    );
    let mut r = replica(9);
    for d in &e {
        deliver(&mut r, d.clone()).unwrap();
    }
    deliver(&mut r, revived).unwrap();
    assert_eq!(r.stats().equivocations, 1);
    assert!(r.deltas().next().is_none());
}

#[test]
fn an_author_adopts_a_more_compacted_version_of_its_own_writes() {
    // Replica 1 restored with its original writes, as after losing the store that held
    // their compacted versions; a peer sends one back.
    let e = deltas(1, [set("k", "old"), set("j", "x")]);
    let other = one_delta(5, set("k", "new"));
    let grown = {
        let mut d = all_values_left_out(&e[0]);
        let mut delta = (*d.delta).clone();
        delta.ctx.union(&other.delta.ctx);
        d.delta = Arc::new(delta);
        resign(d)
    };
    let mut r = restore_open(1, 1, e.clone());
    deliver(&mut r, other.clone()).unwrap();
    let from_peer = |r: &mut Replica, d: &SignedDelta| {
        r.handle(
            1_000,
            Input::Message {
                from: ActorId::from_index(5),
                msg: Message::Delta(d.clone()),
            },
        )
    };
    from_peer(&mut r, &grown).unwrap();
    let held: Vec<Vec<u8>> = r
        .deltas()
        .filter(|d| d.author == e[0].author)
        .map(|d| d.signature.clone())
        .collect();
    assert_eq!(held, [grown.signature.clone(), e[1].signature.clone()]);
    // The older version again changes nothing; nobody was caught.
    from_peer(&mut r, &e[0]).unwrap();
    assert!(r.deltas().any(|d| d.signature == grown.signature));
    assert_eq!(r.stats().equivocations, 0);
    assert_eq!(r.doc().to_json()["j"], "x");
}

#[test]
fn an_author_does_not_adopt_a_version_reaching_into_writes_of_this_life() {
    // Written before a lost store: two writes and their fold.
    let e = deltas(1, [set("k", "old"), set("j", "x")]);
    let fold = {
        let mut joined = (*e[0].delta).clone();
        joined.join_exact(&e[1].delta);
        let mut d = e[1].clone();
        d.seqs = SeqRange { first: 1, last: 2 };
        d.delta = Arc::new(joined);
        resign(d)
    };
    // Restored with only the first, it writes again: sequence number 2, not yet durable.
    let mut r = restore_open(1, 1, vec![e[0].clone()]);
    r.handle(
        1_000,
        Input::Write {
            op: set("k", "this life"),
            tag: 0,
        },
    )
    .unwrap();
    r.handle(
        1_000,
        Input::Message {
            from: ActorId::from_index(5),
            msg: Message::Delta(fold.clone()),
        },
    )
    .unwrap();
    assert!(r.deltas().all(|d| d.signature != fold.signature));
    assert_eq!(r.stats().equivocations, 0);
}
