//! Property tests of the lattice laws, for every CRDT type, through one generic checker.
//!
//! States are never made up: each comes from a random history of writes and merges on
//! three replicas, so every state is one a real replica could reach.
//!
//! Laws checked for every type:
//! - join is commutative, associative and idempotent;
//! - shipping a delta equals shipping the fully mutated state, to any replica that has
//!   seen the state the delta was computed from;
//! - the fast join of small deltas agrees with the exact join;
//! - replicas receiving the same deltas in any order, with duplicates, converge.

use std::fmt::Debug;

use lattice_crdt::counter::PnCounter;
use lattice_crdt::map::Map;
use lattice_crdt::mvreg::MvRegister;
use lattice_crdt::register::LwwRegister;
use lattice_crdt::set::OrSet;
use lattice_crdt::store::{Causal, DotStore};
use lattice_crdt::Lattice;
use lattice_crdt::{ActorId, Doc, DocId, Json, Op, OpKind, Timestamp};
use proptest::prelude::*;

/// A CRDT type under test: how to draw an op, and the delta an op makes.
trait Subject: 'static {
    type Store: DotStore + 'static;
    type Op: Debug + Clone + 'static;
    fn op() -> BoxedStrategy<Self::Op>;
    fn delta(
        state: &Causal<Self::Store>,
        actor: ActorId,
        ts: Timestamp,
        op: &Self::Op,
    ) -> Causal<Self::Store>;
}

/// One step of a history: replica `r` writes `op`, or (if `None`) merges replica `r + 1`.
type Step<O> = (usize, Option<O>);

const REPLICAS: usize = 3;

fn history<S: Subject>() -> impl Strategy<Value = Vec<Step<S::Op>>> {
    prop::collection::vec((0..REPLICAS, prop::option::weighted(0.8, S::op())), 0..40)
}

/// The replicas' states after a history, and every delta written.
type Played<S> = (
    Vec<Causal<<S as Subject>::Store>>,
    Vec<Causal<<S as Subject>::Store>>,
);

/// Runs a history.
fn play<S: Subject>(steps: &[Step<S::Op>]) -> Played<S> {
    let mut states = vec![Causal::<S::Store>::default(); REPLICAS];
    let mut deltas = Vec::new();
    for (t, (r, op)) in steps.iter().enumerate() {
        match op {
            Some(op) => {
                let actor = ActorId::from_index(*r as u64 + 1);
                let ts = Timestamp {
                    millis: t as u64 / 3,
                    logical: 0,
                };
                let d = S::delta(&states[*r], actor, ts, op);
                states[*r].join_with(&d);
                deltas.push(d);
            }
            None => {
                let other = states[(r + 1) % REPLICAS].clone();
                states[*r].join_with(&other);
            }
        }
    }
    (states, deltas)
}

fn joined<L: Lattice>(a: &L, b: &L) -> L {
    let mut x = a.clone();
    x.join(b);
    x
}

fn check_lattice<L: Lattice + PartialEq + Debug>(a: &L, b: &L, c: &L) -> Result<(), TestCaseError> {
    prop_assert_eq!(joined(a, b), joined(b, a), "join is not commutative");
    prop_assert_eq!(
        joined(&joined(a, b), c),
        joined(a, &joined(b, c)),
        "join is not associative"
    );
    prop_assert_eq!(joined(a, a), a.clone(), "join is not idempotent");
    Ok(())
}

fn check_laws<S: Subject>(
    steps: &[Step<S::Op>],
    op: &S::Op,
    order: &[usize],
) -> Result<(), TestCaseError> {
    let (states, deltas) = play::<S>(steps);
    let (a, b, c) = (&states[0], &states[1], &states[2]);
    check_lattice(a, b, c)?;

    // Shipping the delta vs shipping the mutated state, to a replica that has seen `a`.
    let d = S::delta(
        a,
        ActorId::from_index(1),
        Timestamp {
            millis: 1_000,
            logical: 0,
        },
        op,
    );
    let seen_a = joined(b, a);
    prop_assert_eq!(
        joined(&seen_a, &d),
        joined(&seen_a, &joined(a, &d)),
        "delta differs from full state"
    );

    // The fast join agrees with the exact join, for deltas and for whole states.
    for other in [&d, c] {
        let mut exact = seen_a.clone();
        exact.join_exact(other);
        prop_assert_eq!(
            joined(&seen_a, other),
            exact,
            "fast join differs from exact join"
        );
    }

    // Deltas in any order, with duplicates, converge to the join of all states.
    let mut expected = Causal::<S::Store>::default();
    deltas.iter().for_each(|d| expected.join_with(d));
    let mut shuffled = Causal::<S::Store>::default();
    for &i in order {
        if let Some(d) = deltas.get(i % deltas.len().max(1)) {
            shuffled.join_with(d);
        }
    }
    deltas.iter().for_each(|d| shuffled.join_with(d));
    prop_assert_eq!(&shuffled, &expected, "delivery order changed the result");
    let mut all = a.clone();
    all.join_with(b);
    all.join_with(c);
    prop_assert_eq!(
        &all,
        &expected,
        "replica states are not the join of the deltas"
    );
    Ok(())
}

struct Counter;
impl Subject for Counter {
    type Store = PnCounter;
    type Op = i64;
    fn op() -> BoxedStrategy<i64> {
        (-5i64..=5).boxed()
    }
    fn delta(s: &Causal<PnCounter>, actor: ActorId, _: Timestamp, by: &i64) -> Causal<PnCounter> {
        s.store
            .incr(&s.ctx, actor, *by)
            .expect("small increments never overflow")
    }
}

struct Lww;
impl Subject for Lww {
    type Store = LwwRegister<u8>;
    type Op = u8;
    fn op() -> BoxedStrategy<u8> {
        (0u8..4).boxed()
    }
    fn delta(
        s: &Causal<LwwRegister<u8>>,
        actor: ActorId,
        ts: Timestamp,
        v: &u8,
    ) -> Causal<LwwRegister<u8>> {
        s.store.set(&s.ctx, actor, ts, *v)
    }
}

struct Mv;
impl Subject for Mv {
    type Store = MvRegister<u8>;
    type Op = u8;
    fn op() -> BoxedStrategy<u8> {
        (0u8..4).boxed()
    }
    fn delta(
        s: &Causal<MvRegister<u8>>,
        actor: ActorId,
        _: Timestamp,
        v: &u8,
    ) -> Causal<MvRegister<u8>> {
        s.store.set(&s.ctx, actor, *v)
    }
}

struct Set;
impl Subject for Set {
    type Store = OrSet<u8>;
    /// (add?, members)
    type Op = (bool, Vec<u8>);
    fn op() -> BoxedStrategy<(bool, Vec<u8>)> {
        (any::<bool>(), prop::collection::vec(0u8..6, 1..3)).boxed()
    }
    fn delta(
        s: &Causal<OrSet<u8>>,
        actor: ActorId,
        _: Timestamp,
        (add, m): &(bool, Vec<u8>),
    ) -> Causal<OrSet<u8>> {
        if *add {
            s.store.add(&s.ctx, actor, m.iter().copied())
        } else {
            s.store.remove(m.iter())
        }
    }
}

struct Docs;
impl Subject for Docs {
    type Store = Map;
    type Op = Op;
    fn op() -> BoxedStrategy<Op> {
        let key = prop::sample::select(vec!["a", "b", "c"]);
        let path = prop::collection::vec(key, 1..3);
        let kind = prop_oneof![
            (-3i64..=3).prop_map(OpKind::Incr),
            (0u8..3).prop_map(|v| OpKind::Set(Json::parse_or_string(&v.to_string()))),
            (0u8..3).prop_map(|v| OpKind::SetMulti(Json::parse_or_string(&v.to_string()))),
            prop::collection::vec(0u8..4, 1..3)
                .prop_map(|m| OpKind::Add(m.iter().map(|x| x.to_string()).collect())),
            prop::collection::vec(0u8..4, 1..3)
                .prop_map(|m| OpKind::Remove(m.iter().map(|x| x.to_string()).collect())),
            Just(OpKind::Delete),
        ];
        (path, kind)
            .prop_map(|(path, kind)| Op::at(path, kind))
            .boxed()
    }
    fn delta(s: &Causal<Map>, actor: ActorId, ts: Timestamp, op: &Op) -> Causal<Map> {
        // Ops of the wrong kind for a key are refused; they make an empty delta here.
        let mut doc = Doc::new(DocId([0; 32]));
        doc.apply(s);
        doc.prepare(actor, ts, op).unwrap_or_default()
    }
}

fn order() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..64, 0..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn counter_laws(h in history::<Counter>(), op in Counter::op(), o in order()) {
        check_laws::<Counter>(&h, &op, &o)?;
    }

    #[test]
    fn lww_register_laws(h in history::<Lww>(), op in Lww::op(), o in order()) {
        check_laws::<Lww>(&h, &op, &o)?;
    }

    #[test]
    fn mv_register_laws(h in history::<Mv>(), op in Mv::op(), o in order()) {
        check_laws::<Mv>(&h, &op, &o)?;
    }

    #[test]
    fn or_set_laws(h in history::<Set>(), op in Set::op(), o in order()) {
        check_laws::<Set>(&h, &op, &o)?;
    }

    #[test]
    fn document_map_laws(h in history::<Docs>(), op in Docs::op(), o in order()) {
        check_laws::<Docs>(&h, &op, &o)?;
    }

    #[test]
    fn context_and_version_vector_laws(
        xs in prop::collection::vec((0u64..3, 1u64..20), 0..20),
        ys in prop::collection::vec((0u64..3, 1u64..20), 0..20),
        zs in prop::collection::vec((0u64..3, 1u64..20), 0..20),
    ) {
        let ctx = |v: &[(u64, u64)]| {
            let mut c = lattice_crdt::CausalContext::new();
            v.iter().for_each(|(a, n)| c.insert(lattice_crdt::Dot::new(ActorId::from_index(*a), *n)));
            c
        };
        let vv = |v: &[(u64, u64)]| v.iter().map(|(a, n)| (ActorId::from_index(*a), *n)).collect::<lattice_crdt::VersionVector>();
        check_lattice(&ctx(&xs), &ctx(&ys), &ctx(&zs))?;
        check_lattice(&vv(&xs), &vv(&ys), &vv(&zs))?;
    }

    /// Replicas of a document that apply the same deltas in different orders, with
    /// duplicates, end with equal digests (and equal JSON).
    #[test]
    fn document_replicas_converge_to_one_digest(h in history::<Docs>(), orders in prop::collection::vec(Just(()).prop_perturb(|_, mut rng| {
        let mut v: Vec<usize> = (0..120).map(|i| i % 60).collect();
        for i in (1..v.len()).rev() {
            v.swap(i, rng.random_range(0..=i));
        }
        v
    }), 4)) {
        let (_, deltas) = play::<Docs>(&h);
        let mut digests = std::collections::BTreeSet::new();
        let mut renders = std::collections::BTreeSet::new();
        for order in &orders {
            let mut doc = Doc::new(DocId([0; 32]));
            for i in order {
                if let Some(d) = deltas.get(*i) {
                    doc.apply(d);
                }
            }
            // Anything the order skipped arrives last (every replica gets every delta).
            deltas.iter().for_each(|d| doc.apply(d));
            digests.insert(doc.digest());
            renders.insert(doc.to_json().to_string());
        }
        prop_assert_eq!(digests.len(), 1);
        prop_assert_eq!(renders.len(), 1);
    }
}
