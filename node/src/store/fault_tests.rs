//! The store over a disk that fails at a random step of a random workload (and sometimes
//! crashes at a later one), then loses power: after every seed the store opens, holds
//! every write it acknowledged, and holds none that it reported failed.

use std::collections::BTreeMap;
use std::sync::Arc;

use lattice_crdt::sync::{Config, Genesis, Input, Output, Replica, TestAuth};
use lattice_crdt::{codec, ActorId, DocId, Op, OpKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::faulty::{Fault, FaultyDisk};
use super::*;

/// Seeds run by `cargo test`; `LATTICE_STORE_FAULT_SEEDS` runs more.
const SEEDS: u64 = 1_000;

fn doc_meta(name: &str) -> DocMeta {
    DocMeta {
        genesis: Genesis {
            owner: ActorId::from_index(1),
            name: name.into(),
            nonce: [0; 16],
            open: true,
            writers: Vec::new(),
        },
        added_ms: 1,
    }
}

/// `n` single-sequence deltas signed by `author`, in order, writing keys named `salt*`;
/// then, with `fold`, the author's fold of all of them into one delta.
fn deltas(doc: DocId, author: u64, n: u64, salt: &str, fold: bool) -> Vec<SignedDelta> {
    let mut r = Replica::new(
        doc,
        ActorId::from_index(author),
        Arc::new(TestAuth),
        Config::default(),
        author,
    );
    let mut out = Vec::new();
    for i in 0..n {
        let op = Op::new(format!("{salt}{i}"), OpKind::Incr(1));
        r.handle(1_000, Input::Write { op, tag: i }).unwrap();
        drain_persists(&mut r, &mut out);
    }
    if fold {
        r.handle(
            1_000 + lattice_crdt::sync::replica::MIN_AGE_MS,
            Input::Compact,
        )
        .unwrap();
        drain_persists(&mut r, &mut out);
    }
    out
}

fn drain_persists(r: &mut Replica, out: &mut Vec<SignedDelta>) {
    while let Some(o) = r.poll_output() {
        if let Output::Persist { ticket, delta } = o {
            out.push(delta);
            r.handle(1_000, Input::Persisted { ticket }).unwrap();
        }
    }
}

/// A row of the store, as the checker names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Delta(DocId, ActorId, u64),
    Doc(DocId),
    Blob([u8; 32]),
    Service(String),
    Peer(Vec<u8>),
    Acks(DocId),
}

/// A row's bytes, or None when it is deleted.
type Row = Option<Vec<u8>>;

/// What a change does to each row it touches.
fn effects(change: &Change, all: &[SignedDelta]) -> Vec<(Key, Row)> {
    match change {
        // A delta replaces the deltas of its author whose range it covers.
        Change::Put(d) => all
            .iter()
            .filter(|e| {
                e.doc == d.doc
                    && e.author == d.author
                    && e.seqs.first != d.seqs.first
                    && d.seqs.covers(&e.seqs)
            })
            .map(|e| (Key::Delta(e.doc, e.author, e.seqs.first), None))
            .chain([(
                Key::Delta(d.doc, d.author, d.seqs.first),
                Some(codec::encode(d)),
            )])
            .collect(),
        Change::Truncate { doc, author, after } => all
            .iter()
            .filter(|d| d.doc == *doc && d.author == *author && d.seqs.last > *after)
            .map(|d| (Key::Delta(d.doc, d.author, d.seqs.first), None))
            .collect(),
        Change::PutDoc(m) => vec![(Key::Doc(m.id()), Some(codec::encode(m)))],
        Change::PutBlob(m) => vec![(Key::Blob(m.hash), Some(codec::encode(m)))],
        Change::DelBlob(h) => vec![(Key::Blob(*h), None)],
        Change::PutService(ad) => vec![(Key::Service(ad.name.clone()), Some(codec::encode(ad)))],
        Change::DelService(name) => vec![(Key::Service(name.clone()), None)],
        Change::PutPeer(p) => vec![(Key::Peer(p.id.clone()), Some(codec::encode(p)))],
        Change::DelPeer(id) => vec![(Key::Peer(id.clone()), None)],
        Change::PutAcks { doc, acks } => vec![(Key::Acks(*doc), Some(codec::encode(acks)))],
    }
}

fn blob(i: u8, complete: bool) -> BlobMeta {
    BlobMeta {
        hash: [i; 32],
        size: 1 << 20,
        complete,
        pinned: false,
        local: false,
        added_ms: 1,
        verified: if complete { Vec::new() } else { vec![(0, 64)] },
    }
}

fn peer(i: u8, seen_ms: u64) -> PeerRecord {
    PeerRecord {
        id: vec![i; 8],
        addrs: vec![serde_bytes::ByteBuf::from(vec![i; 12])],
        seen_ms,
        relay: false,
    }
}

fn service(name: &str, v: &str) -> ServiceAd {
    ServiceAd {
        name: name.into(),
        meta: [("v".to_string(), v.to_string())].into(),
    }
}

/// A workload: the document writes, blob records and service ads a node makes, in an
/// order a node could make them, with updates and deletions of earlier rows.
fn workload(rng: &mut ChaCha8Rng) -> (Vec<Change>, Vec<SignedDelta>) {
    let (a, b) = (doc_meta("a"), doc_meta("b"));
    // Author 1 writes six deltas, then folds them (aligned blocks 1-4 and 5-6) in place.
    let a1 = deltas(a.id(), 1, 6, "k", true);
    // Author 2 writes four; the last two are cut, and a different third one follows (a
    // node that undid its writes after a failed commit writes those numbers again).
    let a2 = deltas(a.id(), 2, 4, "k", false);
    let again = deltas(a.id(), 2, 3, "z", false)
        .pop()
        .expect("a third delta");
    let b1 = deltas(b.id(), 1, 3, "k", false);
    let all: Vec<SignedDelta> = [&a1[..], &a2, std::slice::from_ref(&again), &b1].concat();
    let mut streams: Vec<Vec<Change>> = vec![
        std::iter::once(Change::PutDoc(a.clone()))
            .chain(a1.into_iter().map(Change::Put))
            .collect(),
        a2.into_iter()
            .map(Change::Put)
            .chain([
                Change::Truncate {
                    doc: a.id(),
                    author: ActorId::from_index(2),
                    after: 2,
                },
                Change::Put(again),
            ])
            .collect(),
        std::iter::once(Change::PutDoc(b))
            .chain(b1.into_iter().map(Change::Put))
            .collect(),
        vec![
            Change::PutBlob(blob(1, false)),
            Change::PutBlob(blob(1, true)),
            Change::PutBlob(blob(2, true)),
            Change::DelBlob([2; 32]),
            Change::PutBlob(blob(3, false)),
        ],
        vec![
            Change::PutService(service("s1", "1")),
            Change::PutService(service("s2", "1")),
            Change::PutService(service("s1", "2")),
            Change::DelService("s2".into()),
        ],
        vec![
            Change::PutPeer(peer(1, 1)),
            Change::PutPeer(peer(2, 1)),
            Change::PutPeer(peer(1, 2)),
            Change::DelPeer(vec![2; 8]),
        ],
    ];
    // Interleave the streams at random, each in its own order.
    let mut out = Vec::new();
    while streams.iter().any(|s| !s.is_empty()) {
        let live: Vec<usize> = (0..streams.len())
            .filter(|i| !streams[*i].is_empty())
            .collect();
        let i = live[rng.random_range(0..live.len())];
        out.push(streams[i].remove(0));
    }
    (out, all)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Told {
    Done,
    Failed,
    Unknown,
}

/// Every row the store holds.
async fn contents(store: &Store, docs: &[DocId]) -> BTreeMap<Key, Vec<u8>> {
    let mut out = BTreeMap::new();
    for m in store.docs().await.expect("docs readable") {
        out.insert(Key::Doc(m.id()), codec::encode(&m));
    }
    for doc in docs {
        for d in store.load(*doc).await.expect("deltas readable") {
            out.insert(Key::Delta(d.doc, d.author, d.seqs.first), codec::encode(&d));
        }
    }
    for m in store.blobs().await.expect("blobs readable") {
        out.insert(Key::Blob(m.hash), codec::encode(&m));
    }
    for ad in store.services().await.expect("services readable") {
        out.insert(Key::Service(ad.name.clone()), codec::encode(&ad));
    }
    for p in store.peers().await.expect("peers readable") {
        out.insert(Key::Peer(p.id.clone()), codec::encode(&p));
    }
    out
}

#[derive(Default, Debug)]
struct Tally {
    fired: BTreeMap<String, u64>,
    told: BTreeMap<String, u64>,
}

/// Runs the workload in waves of concurrent writes; returns what each change was told.
async fn run(
    store: &Store,
    disk: &FaultyDisk,
    changes: &[Change],
    rng: &mut ChaCha8Rng,
) -> Vec<Told> {
    let mut told = Vec::new();
    let mut at = 0;
    let mut freed = false;
    while at < changes.len() {
        // A wave of writes in flight together, some of them of two changes at once.
        let mut waiting = Vec::new();
        for _ in 0..rng.random_range(1..=6) {
            let n = rng.random_range(1..=2).min(changes.len() - at);
            if n == 0 {
                break;
            }
            let write = changes[at..at + n].to_vec();
            waiting.push((n, store.enqueue(write).await.expect("store running")));
            at += n;
        }
        for (n, w) in waiting {
            let t = match w.await {
                Ok(()) => Told::Done,
                Err(StoreError::WriteFailed(m)) => {
                    assert!(
                        disk.fired() != [Fault::Full] || m.contains("disk full"),
                        "a full disk says so: {m}"
                    );
                    Told::Failed
                }
                Err(StoreError::Unknown(_)) => Told::Unknown,
                Err(e) => panic!("unexpected store error: {e}"),
            };
            assert!(
                !freed || t == Told::Done || disk.fired().len() > 1,
                "writing did not resume once space was freed: {t:?}"
            );
            told.extend(std::iter::repeat_n(t, n));
        }
        // Space freed after the disk filled: writing resumes.
        if disk.fired() == [Fault::Full] && !freed && rng.random_bool(0.5) {
            disk.free();
            freed = true;
        }
    }
    told
}

/// One seed: returns the faults that fired and what the writes were told.
async fn case(seed: u64) -> (Vec<Fault>, Vec<Told>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (changes, all) = workload(&mut rng);
    let docs: Vec<DocId> = [doc_meta("a").id(), doc_meta("b").id()].into();
    let disk = FaultyDisk::new(seed);
    let (store, thread) = Store::open_faulty(&disk).expect("a new store opens");
    // Fail one of the steps this workload takes (a few per commit), and in half the seeds
    // crash at a later one.
    let steps = changes.len() as u64 * 2;
    let at = rng.random_range(0..steps);
    disk.plan(at, Fault::ALL[rng.random_range(0..Fault::ALL.len())]);
    if rng.random_bool(0.5) {
        disk.plan(at + 1 + rng.random_range(0..steps), Fault::Crash);
    }
    let told = run(&store, &disk, &changes, &mut rng).await;
    let fired = disk.fired();
    disk.pull_plug();
    drop(store);
    thread.join();
    disk.reboot();

    let (store, thread) = Store::open_faulty(&disk).unwrap_or_else(|e| {
        panic!(
            "seed {seed} ({fired:?}, told {told:?}): the store does not open after the fault: {e}"
        )
    });
    let held = contents(&store, &docs).await;
    // Per row: the changes that touched it, in order, with what their writers were told.
    let mut touched: BTreeMap<Key, Vec<(Row, Told)>> = BTreeMap::new();
    for (c, t) in changes.iter().zip(&told) {
        for (k, v) in effects(c, &all) {
            touched.entry(k).or_default().push((v, *t));
        }
    }
    for (key, history) in &touched {
        // The row must be what the last acknowledged change made it, or what a later change
        // of unknown outcome made it; a change reported failed never shows.
        let last_done = history.iter().rposition(|(_, t)| *t == Told::Done);
        let mut allowed: Vec<Option<&Vec<u8>>> = match last_done {
            Some(i) => vec![history[i].0.as_ref()],
            None => vec![None],
        };
        let after = last_done.map_or(0, |i| i + 1);
        allowed.extend(
            history[after..]
                .iter()
                .filter(|(_, t)| *t == Told::Unknown)
                .map(|(v, _)| v.as_ref()),
        );
        let actual = held.get(key);
        assert!(
            allowed.contains(&actual),
            "seed {seed} ({fired:?}): row {key:?} is {} after changes told {:?}",
            if actual.is_some() {
                "present"
            } else {
                "absent"
            },
            history
                .iter()
                .map(|(v, t)| (v.is_some(), *t))
                .collect::<Vec<_>>()
        );
    }
    // Every row held was written by the workload.
    for key in held.keys() {
        assert!(touched.contains_key(key), "seed {seed}: stray row {key:?}");
    }
    // The restored document accepts what the store gives it back.
    for doc in &docs {
        let back = store.load(*doc).await.unwrap();
        Replica::restore(
            *doc,
            ActorId::from_index(1),
            Arc::new(TestAuth),
            Config::default(),
            1,
            lattice_crdt::sync::Acl::open(),
            back,
        );
    }
    drop(store);
    thread.join();
    (fired, told)
}

#[tokio::test]
async fn every_acknowledged_write_survives_a_failing_disk_and_power_loss() {
    let seeds = std::env::var("LATTICE_STORE_FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS);
    let mut tally = Tally::default();
    for seed in 0..seeds {
        let (fired, told) = case(seed).await;
        // After an I/O error (not a full disk) the store takes no more writes: nothing
        // is built on what the disk may have lost.
        if matches!(fired.first(), Some(Fault::Error | Fault::Torn)) {
            if let Some(first) = told.iter().position(|t| *t != Told::Done) {
                assert!(
                    told[first..].iter().all(|t| *t != Told::Done),
                    "seed {seed} ({fired:?}): a write was done after a disk error: {told:?}"
                );
            }
        }
        *tally.fired.entry(format!("{fired:?}")).or_default() += 1;
        for t in told {
            *tally.told.entry(format!("{t:?}")).or_default() += 1;
        }
    }
    eprintln!(
        "{seeds} seeds: faults fired {:?}; writes told {:?}",
        tally.fired, tally.told
    );
    // The faults must really have fired, in every kind, or this test proves nothing.
    for f in Fault::ALL {
        let n: u64 = tally
            .fired
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("[{f:?}")))
            .map(|(_, n)| n)
            .sum();
        assert!(
            n > seeds / 10,
            "too few {f:?} faults fired: {:?}",
            tally.fired
        );
    }
    for t in ["Done", "Failed", "Unknown"] {
        assert!(
            tally.told.get(t).is_some_and(|n| *n > 0),
            "no write was told {t}: {:?}",
            tally.told
        );
    }
}
