//! Compaction: an author's own writes fold into fewer deltas, and its values that every
//! known replica has seen overwritten leave every log, without changing any state.

use super::*;

pub(super) fn set(k: &str, v: &str) -> Op {
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

/// Compaction that runs while the newest writes are too young to fold, and then never sees
/// the log or the cut move again (the document went quiet), still folds them once old
/// enough: young writes left out make the next run due.
#[test]
fn writes_too_young_at_one_compaction_fold_at_a_later_one_in_a_quiet_document() {
    let mut p = connected(2);
    let big = "z".repeat(4_000);
    for i in 0..8 {
        p.write(0, set("k", &format!("{i}{big}")));
    }
    p.settle();
    exchange_summaries(&mut p);
    // Too young: nothing folds.
    p.input(0, Input::Compact);
    p.settle();
    assert_eq!(p.replicas[0].log_len(), 8);
    // Nothing happens meanwhile; they come of age.
    p.compact(0);
    p.settle();
    for r in &p.replicas {
        assert_eq!(r.log_len(), 1);
        assert!(r.log_bytes() < 4_000 + 1_000, "{}", r.log_bytes());
    }
    assert!(p.errors.is_empty(), "{:?}", p.errors);
}
