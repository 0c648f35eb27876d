//! Lattice's CRDTs side by side with the `crdts` crate, on the same workloads and the same
//! 32-byte actor ids:
//!
//! - counter increments per second;
//! - OR-set: 100,000 adds, and the merge of two replicas with 100,000 distinct adds each;
//! - the encoded size of such sets (printed before the timings).
//!
//! Run with `cargo bench -p lattice-crdt --bench crdt`; figures go in docs/benchmarks.md.

use std::hint::black_box;

use crdts::{CmRDT, CvRDT};
use criterion::{BatchSize, Criterion, Throughput};
use lattice_crdt::counter::PnCounter;
use lattice_crdt::set::OrSet;
use lattice_crdt::store::Causal;
use lattice_crdt::{codec, ActorId, Doc, DocId, Op, OpKind, Timestamp};

const N: usize = 100_000;

fn members(prefix: &str) -> Vec<String> {
    (0..N).map(|i| format!("{prefix}-{i:06}")).collect()
}

fn lattice_set(actor: u64, items: &[String]) -> Causal<OrSet<String>> {
    let mut s = Causal::<OrSet<String>>::new();
    let a = ActorId::from_index(actor);
    for m in items {
        s.apply_add(a, [m.clone()]);
    }
    s
}

fn crdts_set(actor: u64, items: &[String]) -> crdts::Orswot<String, ActorId> {
    let mut s = crdts::Orswot::new();
    let a = ActorId::from_index(actor);
    for m in items {
        let ctx = s.read_ctx().derive_add_ctx(a);
        let op = s.add(m.clone(), ctx);
        s.apply(op);
    }
    s
}

fn report_sizes() {
    let (xs, ys) = (members("a"), members("b"));
    let (l1, l2) = (lattice_set(1, &xs), lattice_set(2, &ys));
    let (c1, c2) = (crdts_set(1, &xs), crdts_set(2, &ys));
    let l_merged = l1.joined(&l2);
    let mut c_merged = c1.clone();
    c_merged.merge(c2.clone());
    assert_eq!(l_merged.store.len(), 2 * N);
    assert_eq!(c_merged.read().val.len(), 2 * N);

    // The same set as a document key, as a node stores and ships it.
    let mut doc = Doc::new(DocId([0; 32]));
    let a = ActorId::from_index(1);
    for m in &xs {
        let d = doc
            .prepare(
                a,
                Timestamp::default(),
                &Op::new("set", OpKind::Add(vec![m.clone()])),
            )
            .expect("add");
        doc.apply(&d);
    }

    let l_size = |s: &Causal<OrSet<String>>| codec::encode(&wrap(s)).len();
    let c_size = |s: &crdts::Orswot<String, ActorId>| serde_cbor::to_vec(s).expect("encode").len();
    eprintln!("encoded size (CBOR)                      lattice      crdts    ratio");
    for (what, l, c) in [
        ("OR-set, 100,000 adds, 1 actor", l_size(&l1), c_size(&c1)),
        (
            "OR-set, 2 x 100,000 adds, 2 actors",
            l_size(&l_merged),
            c_size(&c_merged),
        ),
    ] {
        eprintln!("{what:<40} {l:>8} {c:>10}    {:.2}", l as f64 / c as f64);
    }
    eprintln!(
        "document with that set under one key    {:>8}",
        codec::encode(doc.state()).len()
    );
    let mut ctr = Causal::<PnCounter>::new();
    let mut cc = crdts::PNCounter::<ActorId>::new();
    for i in 0..1_000u64 {
        let a = ActorId::from_index(i % 10);
        ctr.apply_incr(a, 1).expect("incr");
        cc.apply(cc.inc(a));
    }
    eprintln!(
        "counter, 10 actors, 1,000 increments     {:>8} {:>10}",
        codec::encode(&wrap_counter(&ctr)).len(),
        serde_cbor::to_vec(&cc).expect("encode").len()
    );
}

/// An OR-set as the only key of a document state: the form Lattice encodes and ships.
fn wrap(s: &Causal<OrSet<String>>) -> lattice_crdt::Delta {
    let entry = lattice_crdt::map::Entry {
        set: s.store.clone(),
        ..Default::default()
    };
    Causal {
        store: lattice_crdt::map::Map::from_entries([("set".to_owned(), entry)]),
        ctx: s.ctx.clone(),
    }
}

fn wrap_counter(c: &Causal<PnCounter>) -> lattice_crdt::Delta {
    let entry = lattice_crdt::map::Entry {
        counter: c.store.clone(),
        ..Default::default()
    };
    Causal {
        store: lattice_crdt::map::Map::from_entries([("n".to_owned(), entry)]),
        ctx: c.ctx.clone(),
    }
}

fn counter(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter increments");
    g.throughput(Throughput::Elements(1));
    let a = ActorId::from_index(1);
    g.bench_function("lattice Causal<PnCounter>", |b| {
        let mut s = Causal::<PnCounter>::new();
        b.iter(|| black_box(s.apply_incr(a, 1).expect("incr")));
    });
    g.bench_function("lattice Doc (prepare + apply)", |b| {
        let mut doc = Doc::new(DocId([0; 32]));
        let op = Op::new("n", OpKind::Incr(1));
        b.iter(|| {
            let d = doc.prepare(a, Timestamp::default(), &op).expect("incr");
            doc.apply(&d);
        });
    });
    g.bench_function("crdts PNCounter", |b| {
        let mut s = crdts::PNCounter::<ActorId>::new();
        b.iter(|| {
            let op = s.inc(a);
            s.apply(black_box(op));
        });
    });
    g.finish();
}

fn or_set(c: &mut Criterion) {
    let (xs, ys) = (members("a"), members("b"));
    let mut g = c.benchmark_group("or-set");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("lattice add 100k", |b| {
        b.iter(|| black_box(lattice_set(1, &xs)))
    });
    g.bench_function("crdts add 100k", |b| {
        b.iter(|| black_box(crdts_set(1, &xs)))
    });

    let (l1, l2) = (lattice_set(1, &xs), lattice_set(2, &ys));
    g.bench_function("lattice merge 2x100k", |b| {
        b.iter_batched(
            || l1.clone(),
            |mut x| x.join_with(&l2),
            BatchSize::LargeInput,
        )
    });
    let (c1, c2) = (crdts_set(1, &xs), crdts_set(2, &ys));
    g.bench_function("crdts merge 2x100k", |b| {
        b.iter_batched(
            || (c1.clone(), c2.clone()),
            |(mut x, y)| x.merge(y),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn main() {
    report_sizes();
    let mut c = Criterion::default().configure_from_args();
    counter(&mut c);
    or_set(&mut c);
    c.final_summary();
}
