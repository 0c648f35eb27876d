//! Validation of untrusted deltas, in two stages.
//!
//! [`check_structure`] needs nothing but the delta: depth, dots inside the context, every
//! dot written by the author, no dot held twice, counter entries within limits. It is
//! cheap, and a driver may run it (with signature checks) away from the replica.
//!
//! [`Doc::validate_delta`] then judges the delta against the state it would join: clocks
//! within the allowed drift, the author's own dots new (or, in a fold, made by the writes
//! it covers) and not absurdly far ahead, and
//! the context covering no dot of *another* actor that this replica has not seen yet. The
//! last rule is what keeps one writer from deleting another's future writes: a context
//! may only remove what exists. A delta that fails it is not wrong, only early
//! ([`DocError::NotYetSeen`]); the replica holds it back until the dots arrive.

use std::collections::BTreeSet;

use crate::clock::{Hlc, Timestamp};
use crate::counter::MAX_ENTRY_TOTAL;
use crate::ctx::CausalContext;
use crate::doc::{Delta, Doc, DocError, MAX_DEPTH};
use crate::dot::Dot;
use crate::id::ActorId;
use crate::store::DotStore;

/// Bounds applied to untrusted deltas.
#[derive(Clone, Copy, Debug)]
pub struct DeltaLimits {
    pub now_ms: u64,
    pub max_drift_ms: u64,
    /// How far past the author's own highest dot seen here its context may reach.
    pub max_dot_lead: u64,
}

/// Which of its author's dots a delta may hold.
#[derive(Clone, Copy, Debug)]
pub enum Novelty<'a> {
    /// A delta that extends its author's run: every dot it holds is new.
    Fresh,
    /// A fold over entries held here, whose contexts together are `covered`: it holds only
    /// what the writes it replaces made, so its dots are among those, or new if it also
    /// `extends` past what is held.
    Fold {
        covered: &'a CausalContext,
        extends: bool,
    },
}

/// What the replica knows beyond the document, for judging a delta.
#[derive(Clone, Copy)]
pub struct Known<'a> {
    /// The author's newest dot in its own deltas held here. (The document's context can
    /// be higher: other writers' removals cover the author's dots too, and a cut drops the
    /// author's deltas but not those removals.)
    pub own_max: u64,
    /// Actors cut here (removed writers, equivocators): their dots past the cut never
    /// arrive, so a context may cover them.
    pub cut: &'a dyn Fn(&ActorId) -> bool,
    /// True if a delta of this actor, verified and held back here, holds dots up to this
    /// one: the dot exists, so a context may cover it. (Folds gather writes made before
    /// and after another author's: two authors' folds can each cover a dot of the other,
    /// and would otherwise wait for each other for ever.)
    pub held: &'a dyn Fn(&ActorId, u64) -> bool,
}

/// Checks what can be checked on `delta` alone, as written by `author`.
pub fn check_structure(author: &ActorId, delta: &Delta) -> Result<(), DocError> {
    let depth = delta.store.depth() + 1;
    if depth > MAX_DEPTH {
        return Err(DocError::TooDeep { depth });
    }
    let mut err = None;
    let mut seen = BTreeSet::<Dot>::new();
    delta.store.for_each_dot(&mut |d| {
        if err.is_some() {
            return;
        }
        if !delta.ctx.contains(d) {
            err = Some(DocError::DotOutsideContext {
                actor: d.actor,
                counter: d.counter,
            });
        } else if d.actor != *author {
            err = Some(DocError::ForeignDot {
                author: *author,
                actor: d.actor,
            });
        } else if !seen.insert(*d) {
            // One dot names one write at one place. Held twice, it would make the join's
            // result depend on arrival order.
            err = Some(DocError::RepeatedDot { counter: d.counter });
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let mut too_large = None;
    delta.store.for_each_counter(&mut |c| {
        let m = c.max_entry();
        if m > MAX_ENTRY_TOTAL {
            too_large = Some(m);
        }
    });
    if let Some(total) = too_large {
        return Err(DocError::CounterEntryTooLarge { total });
    }
    Ok(())
}

impl Doc {
    /// Checks a delta from `author` received from the network before it is applied:
    /// [`check_structure`], then the rules that depend on this document's state. `novelty`
    /// says which of the author's dots it may hold, `known` what the replica knows besides.
    pub fn validate_delta(
        &self,
        author: &ActorId,
        delta: &Delta,
        limits: &DeltaLimits,
        novelty: Novelty<'_>,
        known: Known<'_>,
    ) -> Result<(), DocError> {
        check_structure(author, delta)?;
        let seen = self.ctx();
        let own_max = known.own_max;
        for (actor, ranges) in delta.ctx.iter() {
            let reach = ranges.last().map_or(0, |r| r.1);
            if actor == author {
                if reach > own_max.saturating_add(limits.max_dot_lead) {
                    return Err(DocError::DotTooFarAhead {
                        actor: *actor,
                        counter: reach,
                        known: own_max,
                        max_lead: limits.max_dot_lead,
                    });
                }
            } else if reach > seen.max(actor) && !(known.cut)(actor) && !(known.held)(actor, reach)
            {
                return Err(DocError::NotYetSeen {
                    actor: *actor,
                    counter: reach,
                    known: seen.max(actor),
                });
            }
        }
        let mut stale = None;
        delta.store.for_each_dot(&mut |d| {
            let new = d.counter > own_max;
            let allowed = match novelty {
                Novelty::Fresh => new,
                Novelty::Fold { covered, extends } => covered.contains(d) || (extends && new),
            };
            if !allowed && stale.is_none() {
                stale = Some(d.counter);
            }
        });
        if let Some(counter) = stale {
            return Err(DocError::StaleDot {
                counter,
                known: own_max,
            });
        }
        let mut latest = None::<Timestamp>;
        delta
            .store
            .for_each_timestamp(&mut |t| latest = latest.max(Some(t)));
        if let Some(t) = latest {
            Hlc::new(limits.max_drift_ms).check(t, limits.now_ms)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::CausalContext;
    use crate::doc::{Op, OpKind};
    use crate::id::DocId;

    fn doc() -> Doc {
        Doc::new(DocId::derive(&ActorId::from_index(0), "t", &[0; 16]))
    }

    /// What a replica holding `d` knows of `author`: its newest dot, and no cuts.
    fn known(d: &Doc, author: &ActorId) -> Known<'static> {
        Known {
            own_max: d.ctx().max(author),
            cut: &|_| false,
            held: &|_, _| false,
        }
    }

    const LIMITS: DeltaLimits = DeltaLimits {
        now_ms: 1_000,
        max_drift_ms: 100,
        max_dot_lead: 1_000,
    };

    #[test]
    fn validation_refuses_forged_or_hostile_deltas() {
        let d = doc();
        let (a, b) = (ActorId::from_index(1), ActorId::from_index(2));
        let good = d
            .prepare(a, Timestamp::at(1), &Op::new("k", OpKind::Incr(1)))
            .unwrap();
        assert!(d
            .validate_delta(&a, &good, &LIMITS, Novelty::Fresh, known(&d, &a))
            .is_ok());
        // Claiming another actor's write.
        assert!(matches!(
            d.validate_delta(&b, &good, &LIMITS, Novelty::Fresh, known(&d, &b)),
            Err(DocError::ForeignDot { .. })
        ));
        // A register from the year 9999.
        let future = d
            .prepare(
                a,
                Timestamp::at(253_402_300_799_000),
                &Op::new("k", OpKind::Set("x".into())),
            )
            .unwrap();
        assert!(matches!(
            d.validate_delta(&a, &future, &LIMITS, Novelty::Fresh, known(&d, &a)),
            Err(DocError::Clock(_))
        ));
        // Its own dots far ahead of anything seen.
        let mut ahead = good.clone();
        ahead.ctx.insert_range(a, 1, 1 << 40);
        assert!(matches!(
            d.validate_delta(&a, &ahead, &LIMITS, Novelty::Fresh, known(&d, &a)),
            Err(DocError::DotTooFarAhead { .. })
        ));
        // A dot the context does not cover.
        let mut outside = good.clone();
        outside.ctx = CausalContext::new();
        assert!(matches!(
            d.validate_delta(&a, &outside, &LIMITS, Novelty::Fresh, known(&d, &a)),
            Err(DocError::DotOutsideContext { .. })
        ));
    }

    #[test]
    fn a_context_may_not_cover_another_actors_dots_not_seen_here() {
        let (a, b) = (ActorId::from_index(1), ActorId::from_index(2));
        let mut d = doc();
        let bs = d
            .prepare(b, Timestamp::at(1), &Op::new("x", OpKind::Incr(5)))
            .unwrap();
        d.apply(&bs);
        // `a` deletes `x` having seen b's one dot: fine.
        let del = d
            .prepare(a, Timestamp::at(2), &Op::new("x", OpKind::Delete))
            .unwrap();
        assert!(d
            .validate_delta(&a, &del, &LIMITS, Novelty::Fresh, known(&d, &a))
            .is_ok());
        // The same delete claiming four billion of b's dots: b's future writes would
        // vanish on arrival. Held back until they exist here.
        let mut greedy = del.clone();
        greedy.ctx.insert_range(b, 1, 1 << 32);
        assert_eq!(
            d.validate_delta(&a, &greedy, &LIMITS, Novelty::Fresh, known(&d, &a)),
            Err(DocError::NotYetSeen {
                actor: b,
                counter: 1 << 32,
                known: 1
            })
        );
    }

    #[test]
    fn one_dot_under_two_keys_is_refused() {
        let a = ActorId::from_index(1);
        let d = doc();
        let one = d
            .prepare(a, Timestamp::at(1), &Op::new("x", OpKind::Incr(1)))
            .unwrap();
        let mut twice = one.clone();
        let entry = twice.store.0 .0["x"].clone();
        twice.store.0 .0.insert("y".into(), entry);
        assert_eq!(
            check_structure(&a, &twice),
            Err(DocError::RepeatedDot { counter: 1 })
        );
    }

    #[test]
    fn a_fresh_delta_may_not_reuse_an_old_dot_of_its_author() {
        let a = ActorId::from_index(1);
        let mut d = doc();
        let first = d
            .prepare(a, Timestamp::at(1), &Op::new("x", OpKind::Incr(1)))
            .unwrap();
        d.apply(&first);
        // The same dot again, now under another key, as if it were a new write.
        let mut again = first.clone();
        let entry = again.store.0 .0.remove("x").unwrap();
        again.store.0 .0.insert("y".into(), entry);
        assert_eq!(
            d.validate_delta(&a, &again, &LIMITS, Novelty::Fresh, known(&d, &a)),
            Err(DocError::StaleDot {
                counter: 1,
                known: 1
            })
        );
        // A fold over the write that made it may hold it (the replica checks that it is
        // in the same place); a fold over other writes may not.
        let covered = first.ctx.clone();
        let fold = Novelty::Fold {
            covered: &covered,
            extends: false,
        };
        assert!(d
            .validate_delta(&a, &again, &LIMITS, fold, known(&d, &a))
            .is_ok());
        let elsewhere = CausalContext::new();
        let fold = Novelty::Fold {
            covered: &elsewhere,
            extends: true,
        };
        assert!(d
            .validate_delta(&a, &again, &LIMITS, fold, known(&d, &a))
            .is_err());
    }

    #[test]
    fn a_fold_over_held_writes_only_may_not_bring_a_new_dot() {
        let a = ActorId::from_index(1);
        let mut d = doc();
        let first = d
            .prepare(a, Timestamp::at(1), &Op::new("x", OpKind::Incr(1)))
            .unwrap();
        d.apply(&first);
        let covered = first.ctx.clone();
        // "Write 1 again", plus a dot (a,2) that no write it covers made.
        let mut more = first.clone();
        let extra = d
            .prepare(a, Timestamp::at(2), &Op::new("z", OpKind::Incr(1)))
            .unwrap();
        more.join_with(&extra);
        let fold = |extends| Novelty::Fold {
            covered: &covered,
            extends,
        };
        assert!(matches!(
            d.validate_delta(&a, &more, &LIMITS, fold(false), known(&d, &a)),
            Err(DocError::StaleDot { counter: 2, .. })
        ));
        // Reaching past what is held, the fold may carry that write's dot.
        assert!(d
            .validate_delta(&a, &more, &LIMITS, fold(true), known(&d, &a))
            .is_ok());
    }

    #[test]
    fn a_context_may_cover_dots_of_a_cut_actor_never_seen_here() {
        let (a, x) = (ActorId::from_index(1), ActorId::from_index(7));
        let d = doc();
        let mut del = d
            .prepare(a, Timestamp::at(2), &Op::new("k", OpKind::Delete))
            .unwrap();
        del.ctx.insert_range(x, 1, 8);
        let cut = Known {
            own_max: 0,
            cut: &|actor: &ActorId| *actor == ActorId::from_index(7),
            held: &|_, _| false,
        };
        assert!(d
            .validate_delta(&a, &del, &LIMITS, Novelty::Fresh, cut)
            .is_ok());
        assert!(matches!(
            d.validate_delta(&a, &del, &LIMITS, Novelty::Fresh, known(&d, &a)),
            Err(DocError::NotYetSeen { .. })
        ));
    }

    mod join_property {
        use super::*;
        use crate::json::Json;
        use proptest::prelude::*;

        fn op(k: u8, kind: u8, n: u8) -> Op {
            let key = format!("k{}", k % 4);
            match kind % 6 {
                0 => Op::new(key, OpKind::Incr(i64::from(n) - 3)),
                1 => Op::new(key, OpKind::Set(Json::parse_or_string(&n.to_string()))),
                2 => Op::new(key, OpKind::Add(vec![format!("m{}", n % 3)])),
                3 => Op::new(key, OpKind::Remove(vec![format!("m{}", n % 3)])),
                4 => Op::at(["nested", key.as_str()], OpKind::Incr(1)),
                _ => Op::new(key, OpKind::Delete),
            }
        }

        /// Ways a hostile writer bends a delta it signs.
        fn mutate(doc: &Doc, delta: &mut Delta, how: u8, n: u8) {
            let other = ActorId::from_index(u64::from(n % 3) + 1);
            match how % 6 {
                // The same entry under a second key.
                0 => {
                    if let Some((_, e)) = delta.store.0 .0.iter().next() {
                        let e = e.clone();
                        delta.store.0 .0.insert(format!("copy{n}"), e);
                    }
                }
                // A context reaching past what is seen here, by a little or a lot.
                1 => {
                    let reach = doc.ctx().max(&other) + 1 + u64::from(n) * (1 << 20);
                    delta.ctx.insert_range(other, 1, reach);
                }
                // A context covering dots that are seen here (a wide remove).
                2 => {
                    let known = doc.ctx().max(&other);
                    if known > 0 {
                        delta.ctx.insert_range(other, 1, known);
                    }
                }
                // An entry moved to another key.
                3 => {
                    if let Some((k, e)) = delta.store.0 .0.pop_first() {
                        delta.store.0 .0.insert(format!("{k}-moved"), e);
                    }
                }
                // An entry of the document (old dots, maybe the author's) under a new key,
                // with its dots in the context.
                4 => {
                    let picked = doc
                        .root()
                        .iter()
                        .nth(usize::from(n) % doc.root().len().max(1));
                    if let Some((k, e)) = picked {
                        let e = e.clone();
                        e.for_each_dot(&mut |d| delta.ctx.insert(*d));
                        delta.store.0 .0.insert(format!("{k}-old{n}"), e);
                    }
                }
                // The context stripped.
                _ => delta.ctx = Default::default(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever a hostile writer sends, if the checks accept it, the fast join
            /// (which visits only the keys the delta names) gives the exact join.
            #[test]
            fn the_fast_join_equals_the_exact_join_on_every_accepted_delta(
                history in prop::collection::vec((0usize..4, any::<u8>(), any::<u8>(), any::<u8>()), 0..40),
                write in (any::<u8>(), any::<u8>(), any::<u8>()),
                mutations in prop::collection::vec((any::<u8>(), any::<u8>()), 0..4),
                fold_over in 0usize..4,
            ) {
                let author = ActorId::from_index(9);
                let mut doc = doc();
                let mut own: Vec<Delta> = Vec::new();
                for (i, (a, k, kind, n)) in history.into_iter().enumerate() {
                    // The author writes too, so a fold may carry its old dots.
                    let actor = ActorId::from_index([1, 2, 3, 9][a]);
                    if let Ok(d) = doc.prepare(actor, Timestamp::at(i as u64), &op(k, kind, n)) {
                        doc.apply(&d);
                        if actor == author {
                            own.push(d);
                        }
                    }
                }
                let Ok(write) = doc.prepare(author, Timestamp::at(500), &op(write.0, write.1, write.2)) else {
                    return Ok(());
                };
                // A new write alone, or folded with the author's last few writes (held
                // here), as an honest fold would be; then bent.
                let covered_n = fold_over.min(own.len());
                let mut covered = Delta::default();
                for d in &own[own.len() - covered_n..] {
                    covered.join_with(d);
                }
                let mut delta = covered.clone();
                delta.join_with(&write);
                for (how, n) in mutations {
                    mutate(&doc, &mut delta, how, n);
                }
                let novelty = if covered_n == 0 {
                    Novelty::Fresh
                } else {
                    Novelty::Fold { covered: &covered.ctx, extends: true }
                };
                let limits = DeltaLimits { now_ms: 1_000, max_drift_ms: 1_000, max_dot_lead: 1 << 40 };
                // What the replica accepts: the checks pass, and a fold contains what it
                // covers (else it is evidence of equivocation, not applied).
                let consistent = covered_n == 0 || {
                    let mut joined = delta.clone();
                    joined.join_exact(&covered);
                    joined == delta
                };
                let known = Known { own_max: doc.ctx().max(&author), cut: &|_| false, held: &|_, _| false };
                if consistent && doc.validate_delta(&author, &delta, &limits, novelty, known).is_ok() {
                    let mut fast = doc.clone();
                    fast.apply(&delta);
                    let mut exact = doc.clone();
                    exact.apply_exact(&delta);
                    prop_assert_eq!(fast, exact);
                }
            }
        }
    }
}
