//! Compaction: an author's own writes fold into fewer deltas, and its values that every
//! known replica has seen overwritten leave every log, without changing any state.

use super::*;
use crate::store::DotStore;

fn set(k: &str, v: &str) -> Op {
    Op::new(k, OpKind::Set(Json::from_value(&serde_json::json!(v))))
}

/// Every pair exchanges summaries, so each replica learns what the others hold.
fn exchange_summaries(p: &mut Pump) {
    let actors: Vec<ActorId> = p.replicas.iter().map(|r| r.actor()).collect();
    for i in 0..actors.len() {
        for (j, a) in actors.iter().enumerate() {
            if i != j && p.links[i][j] {
                p.input(i, Input::Reconcile(*a));
            }
        }
    }
    p.settle();
}

fn connected(n: u64) -> Pump {
    let mut p = Pump::new(n);
    for a in 0..n as usize {
        for b in a + 1..n as usize {
            p.connect(a, b);
        }
    }
    p.settle();
    p
}

fn digests(p: &Pump) -> Vec<[u8; 32]> {
    p.replicas.iter().map(|r| r.doc().digest()).collect()
}

#[test]
fn an_authors_own_overwrites_fold_into_one_delta_everywhere() {
    let mut p = connected(2);
    let big = "x".repeat(4_000);
    for i in 0..256 {
        p.write(0, set("k", &format!("{i}{big}")));
    }
    p.settle();
    let before = digests(&p);
    assert!(p.replicas[1].log_bytes() > 256 * 4_000);
    p.compact(0);
    p.settle();
    for r in &p.replicas {
        assert_eq!(r.log_len(), 1);
        assert!(r.log_bytes() < 2 * 4_000 + 1_000, "{}", r.log_bytes());
    }
    assert_eq!(digests(&p), before);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

#[test]
fn a_value_overwritten_by_another_author_leaves_the_logs_only_once_every_replica_holds_the_overwrite(
) {
    let mut p = connected(3);
    let big = "y".repeat(8_000);
    p.write(0, set("k", &big));
    p.settle();
    exchange_summaries(&mut p);
    // Replica 2 goes away having seen only the first value.
    p.disconnect(2, 0);
    p.disconnect(2, 1);
    p.write(1, set("k", "small"));
    p.settle();
    exchange_summaries(&mut p);
    p.compact(0);
    p.settle();
    // Replica 2 still counts: it has not acknowledged the overwrite, so the value stays.
    assert!(p.replicas[0].log_bytes() > 8_000);
    assert!(p.replicas[0].stable_cut().get(&p.replicas[1].actor()) == 0);

    // It comes back and says what it holds: now everyone has the overwrite.
    p.connect(2, 0);
    p.connect(2, 1);
    p.settle();
    exchange_summaries(&mut p);
    let before = digests(&p);
    assert!(before.iter().all(|d| *d == before[0]));
    p.compact(0);
    p.settle();
    for (i, r) in p.replicas.iter().enumerate() {
        assert!(
            r.log_bytes() < 2_000,
            "replica {i} still holds {} bytes",
            r.log_bytes()
        );
    }
    assert_eq!(digests(&p), before);
    assert_eq!(p.json(2)["k"], "small");
    // A new replica catches up from the folds alone and reaches the same state.
    let late = add(&mut p, replica(4));
    p.connect(late, 0);
    p.settle();
    assert_eq!(
        p.replicas[late].doc().state(),
        p.replicas[0].doc().state(),
        "{:?} {:?} {:?}",
        p.replicas[late].vv(),
        p.errors,
        p.replicas[late].stats()
    );
    assert_eq!(p.replicas[late].doc().digest(), before[0]);
    assert!(p.replicas[late].log_bytes() < 2_000);
    assert!(p.replicas.iter().all(|r| r.stats().equivocations == 0));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

/// Three authors overwrite one key in a shuffled order, so the writes each one overwrote
/// are scattered among the others' sequence numbers. Once all is stable, each author's
/// folds cover those and the dead writes between them as a few ranges: the history stays
/// a few folds per author, not one context range per overwrite.
#[test]
fn overwrites_among_several_authors_leave_a_few_ranges_per_fold() {
    let mut p = connected(3);
    let mut x = 7u64;
    for i in 0..3_000 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        p.write((x >> 33) as usize % 3, set("k", &format!("{i}")));
        p.settle();
    }
    exchange_summaries(&mut p);
    let before = digests(&p);
    for i in 0..3 {
        p.compact(i);
        p.settle();
    }
    for (i, r) in p.replicas.iter().enumerate() {
        // Each author keeps one fold per set bit of its write count (about 1,000 here),
        // each a signature, the actor table and a few ranges: well under 1 KiB an author.
        // Naming every overwritten write would take about 14 KB more.
        assert!(r.log_bytes() < 3 * 2_048, "replica {i}: {}", r.log_bytes());
    }
    assert_eq!(digests(&p), before);
    let late = add(&mut p, replica(4));
    p.connect(late, 0);
    p.settle();
    assert_eq!(p.replicas[late].doc().digest(), before[0]);
    assert!(p.replicas.iter().all(|r| r.stats().equivocations == 0));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

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

/// Adds a replica to the pump, linked to nobody yet; returns its index.
fn add(p: &mut Pump, r: Replica) -> usize {
    p.replicas.push(r);
    let n = p.replicas.len();
    for row in &mut p.links {
        row.push(true);
    }
    p.links.push(vec![true; n]);
    p.held.push(Vec::new());
    p.disks.push(Vec::new());
    n - 1
}

fn with_horizon(i: u64, horizon_ms: u64) -> Replica {
    Replica::new(
        doc_id(),
        ActorId::from_index(i),
        Arc::new(TestAuth),
        Config {
            compaction_horizon_ms: horizon_ms,
            ..Config::default()
        },
        i,
    )
}

#[test]
fn a_replica_away_past_the_horizon_stops_holding_the_cut_and_returns_without_losing_a_write() {
    let mut p = Pump::of((1..=3).map(|i| with_horizon(i, 60_000)).collect());
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        p.connect(a, b);
    }
    p.settle();
    let big = "z".repeat(8_000);
    p.write(0, set("k", &big));
    p.write(2, set("mine", "before"));
    p.settle();
    exchange_summaries(&mut p);
    p.disconnect(2, 0);
    p.disconnect(2, 1);
    // While away, replica 2 writes; the others overwrite the big value.
    p.write(2, set("mine", "while away"));
    p.write(1, set("k", "small"));
    p.settle();
    exchange_summaries(&mut p);
    p.compact(0);
    p.settle();
    assert!(p.replicas[0].log_bytes() > 8_000, "replica 2 still counts");

    // Past the horizon it no longer does.
    p.now += 61_000;
    exchange_summaries(&mut p);
    p.compact(0);
    p.settle();
    assert!(
        p.replicas[0].log_bytes() < 2_000,
        "{}",
        p.replicas[0].log_bytes()
    );
    assert!(p.replicas[1].log_bytes() < 2_000);

    // It returns: it converges from the folds, and its write made while away survives.
    p.connect(2, 0);
    p.connect(2, 1);
    p.settle();
    exchange_summaries(&mut p);
    let d = digests(&p);
    assert!(d.iter().all(|x| *x == d[0]));
    for i in 0..3 {
        assert_eq!(p.json(i)["k"], "small");
        assert_eq!(p.json(i)["mine"], "while away");
    }
    // And its log sheds the value once it compacts what it now knows is stable.
    p.compact(0);
    p.settle();
    assert!(
        p.replicas[2].log_bytes() < 2_000,
        "{}",
        p.replicas[2].log_bytes()
    );
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

#[test]
fn a_fold_is_logged_served_and_broadcast_only_once_durable() {
    let mut p = connected(2);
    for _ in 0..8 {
        p.write(0, incr("n", 1));
    }
    p.settle();
    p.hold_persists = true;
    p.compact(0);
    p.settle();
    assert_eq!(
        p.replicas[0].log_len(),
        8,
        "not logged before it is durable"
    );
    assert_eq!(p.replicas[1].log_len(), 8, "nor sent");
    // A second compaction meanwhile makes nothing more.
    p.compact(0);
    assert_eq!(p.held[0].len(), 1);
    p.hold_persists = false;
    p.flush(0);
    p.settle();
    assert_eq!(p.replicas[0].log_len(), 1);
    assert_eq!(p.replicas[1].log_len(), 1);
    // A persist that fails: the fold may have reached the disk all the same, so the next
    // run persists that very fold again rather than another version of the same writes.
    for _ in 0..8 {
        p.write(0, incr("n", 1));
    }
    p.settle();
    p.hold_persists = true;
    p.compact(0);
    let (_, first) = p.held[0].pop().unwrap();
    assert_eq!((first.seqs.first, first.seqs.last), (1, 16));
    p.input(0, Input::PersistFailed);
    assert_eq!(p.replicas[0].log_len(), 9);
    p.compact(0);
    let (_, again) = p.held[0].last().cloned().unwrap();
    assert_eq!(again.signature, first.signature);
    p.hold_persists = false;
    p.flush(0);
    p.settle();
    assert_eq!(p.replicas[0].log_len(), 1);
    assert_eq!(p.json(1)["n"], 16);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}

#[test]
fn what_peers_hold_survives_a_restart_through_with_acks() {
    let mut p = connected(2);
    p.write(0, set("k", &"v".repeat(4_000)));
    p.settle();
    exchange_summaries(&mut p);
    let acks: Vec<(ActorId, Ack)> = p.replicas[0].acks().map(|(a, k)| (*a, k.clone())).collect();
    assert_eq!(acks.len(), 1);
    // Restarted without them, the cut would be this replica's own vector; with them, it
    // is held back by the peer's.
    p.write(0, set("k", "w"));
    let restored = restore_open(1, 1, p.disks[0].clone());
    assert_eq!(restored.stable_cut().get(&ActorId::from_index(1)), 2);
    let restored = restored.with_acks(acks);
    assert_eq!(restored.stable_cut().get(&ActorId::from_index(1)), 1);
}

#[test]
fn a_compacted_owner_keeps_a_removed_writer_removed_on_a_new_replica() {
    let owner = ActorId::from_index(1);
    let genesis = super::access::genesis(&[2]);
    let mut p = Pump::of(
        (1..=2)
            .map(|i| replica(i).with_acl(genesis.clone()))
            .collect(),
    );
    p.connect(0, 1);
    p.settle();
    p.write(1, incr("n", 1));
    p.settle();
    // The writer, cut off, writes again; meanwhile the owner removes it.
    p.disconnect(0, 1);
    p.write(1, incr("n", 100));
    p.input(
        0,
        Input::Admin {
            changes: vec![AclChange::Remove(ActorId::from_index(2))],
            tag: 0,
        },
    );
    for _ in 0..7 {
        p.write(0, incr("n", 1));
    }
    p.compact(0);
    p.settle();
    let owner_entries: Vec<SignedDelta> = p.replicas[0]
        .deltas()
        .filter(|d| d.author == owner)
        .cloned()
        .collect();
    assert_eq!(owner_entries.len(), 1, "the owner's writes folded into one");
    // A new replica learns the rules only from the owner's fold, then gets both of the
    // writer's deltas: the one past the cut is refused.
    let mut late = replica(3).with_acl(genesis);
    for d in owner_entries {
        deliver(&mut late, d).unwrap();
    }
    let writer: Vec<SignedDelta> = p.replicas[1].deltas().cloned().collect();
    assert_eq!(writer.len(), 2);
    let results: Vec<bool> = writer
        .into_iter()
        .map(|d| deliver(&mut late, d).is_ok())
        .collect();
    assert_eq!(results, [true, false]);
    assert_eq!(late.doc().to_json()["n"], 8);
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

#[test]
fn a_connected_peer_not_heard_from_and_a_silent_owner_hold_the_cut_at_nothing() {
    let mut p = connected(2);
    p.write(0, set("k", "v"));
    p.settle();
    exchange_summaries(&mut p);
    assert_eq!(p.replicas[0].stable_cut().get(&ActorId::from_index(1)), 1);
    // A third replica connects: until it says what it holds, nothing is stable.
    let third = add(&mut p, replica(3));
    p.input(0, Input::PeerUp(ActorId::from_index(3)));
    assert!(p.replicas[0].stable_cut().is_empty());
    p.connect(third, 0);
    p.settle();
    exchange_summaries(&mut p);
    assert_eq!(p.replicas[0].stable_cut().get(&ActorId::from_index(1)), 1);

    // In a closed document, a writer's replica counts the owner's whatever the horizon:
    // without word from the owner, nothing is stable.
    let genesis = super::access::genesis(&[2]);
    let mut writer = replica(2).with_acl(genesis);
    writer
        .handle(
            1_000,
            Input::Write {
                op: set("k", "v"),
                tag: 0,
            },
        )
        .unwrap();
    while let Some(o) = writer.poll_output() {
        if let Output::Persist { ticket, .. } = o {
            writer.handle(1_000, Input::Persisted { ticket }).unwrap();
        }
    }
    assert_eq!(writer.vv().get(&ActorId::from_index(2)), 1);
    assert!(writer.stable_cut().is_empty());
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
fn folding_replaces_an_authors_deltas_on_every_replica() {
    let mut p = Pump::new(3);
    p.connect(0, 1);
    p.settle();
    for _ in 0..128 {
        p.write(0, incr("n", 1));
    }
    p.settle();
    assert_eq!(p.replicas[1].log_len(), 128);
    p.compact(0);
    p.settle();
    assert_eq!(p.replicas[0].log_len(), 1);
    assert_eq!(
        p.replicas[1].log_len(),
        1,
        "the fold replaces the originals on the peer too"
    );
    // A late joiner gets the single folded delta.
    p.deltas_messages.clear();
    p.connect(2, 0);
    p.settle();
    assert_eq!(p.deltas_messages, [1]);
    assert_eq!(p.json(2)["n"], 128);
    assert_eq!(p.replicas[2].doc().digest(), p.replicas[0].doc().digest());
    // The folded delta is small: a counter written 128 times keeps one entry.
    let folded = p.replicas[0].deltas().next().unwrap();
    assert_eq!(
        folded.seqs,
        SeqRange {
            first: 1,
            last: 128
        }
    );
    // And on disk it replaced the originals when stored in order.
    let restored = restore_open(1, 1, p.disks[0].clone());
    assert_eq!(restored.log_len(), 1);
    assert_eq!(restored.doc().to_json()["n"], 128);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}
