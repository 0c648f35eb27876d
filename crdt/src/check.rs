//! Validation of untrusted deltas, in two stages.
//!
//! [`check_structure`] needs nothing but the delta: depth, dots inside the context, every
//! dot written by the author, no dot held twice, counter entries within limits. It is
//! cheap, and a driver may run it (with signature checks) away from the replica.
//!
//! [`Doc::validate_delta`] then judges the delta against the state it would join: clocks
//! within the allowed drift, the author's own dots fresh and not absurdly far ahead, and
//! the context covering no dot of *another* actor that this replica has not seen yet. The
//! last rule is what keeps one writer from deleting another's future writes: a context
//! may only remove what exists. A delta that fails it is not wrong, only early
//! ([`DocError::NotYetSeen`]); the replica holds it back until the dots arrive.

use std::collections::BTreeSet;

use crate::clock::{Hlc, Timestamp};
use crate::counter::MAX_ENTRY_TOTAL;
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
    /// [`check_structure`], then the rules that depend on this document's state. `fresh`
    /// says the delta extends the author's run (it is not a fold over deltas held here),
    /// so every dot it holds must be new.
    pub fn validate_delta(
        &self,
        author: &ActorId,
        delta: &Delta,
        limits: &DeltaLimits,
        fresh: bool,
    ) -> Result<(), DocError> {
        check_structure(author, delta)?;
        let seen = self.ctx();
        for (actor, ranges) in delta.ctx.iter() {
            let known = seen.max(actor);
            let reach = ranges.last().map_or(0, |r| r.1);
            if actor == author {
                if reach > known.saturating_add(limits.max_dot_lead) {
                    return Err(DocError::DotTooFarAhead {
                        actor: *actor,
                        counter: reach,
                        known,
                        max_lead: limits.max_dot_lead,
                    });
                }
            } else if reach > known {
                return Err(DocError::NotYetSeen {
                    actor: *actor,
                    counter: reach,
                    known,
                });
            }
        }
        if fresh {
            let known = seen.max(author);
            let mut stale = None;
            delta.store.for_each_dot(&mut |d| {
                if d.counter <= known && stale.is_none() {
                    stale = Some(d.counter);
                }
            });
            if let Some(counter) = stale {
                return Err(DocError::StaleDot { counter, known });
            }
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

    fn ts(ms: u64) -> Timestamp {
        Timestamp {
            millis: ms,
            logical: 0,
        }
    }

    fn doc() -> Doc {
        Doc::new(DocId::derive(&ActorId::from_index(0), "t", &[0; 16]))
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
        let good = d.prepare(a, ts(1), &Op::new("k", OpKind::Incr(1))).unwrap();
        assert!(d.validate_delta(&a, &good, &LIMITS, true).is_ok());
        // Claiming another actor's write.
        assert!(matches!(
            d.validate_delta(&b, &good, &LIMITS, true),
            Err(DocError::ForeignDot { .. })
        ));
        // A register from the year 9999.
        let future = d
            .prepare(
                a,
                ts(253_402_300_799_000),
                &Op::new("k", OpKind::Set("x".into())),
            )
            .unwrap();
        assert!(matches!(
            d.validate_delta(&a, &future, &LIMITS, true),
            Err(DocError::Clock(_))
        ));
        // Its own dots far ahead of anything seen.
        let mut ahead = good.clone();
        ahead.ctx.insert_range(a, 1, 1 << 40);
        assert!(matches!(
            d.validate_delta(&a, &ahead, &LIMITS, true),
            Err(DocError::DotTooFarAhead { .. })
        ));
        // A dot the context does not cover.
        let mut outside = good.clone();
        outside.ctx = CausalContext::new();
        assert!(matches!(
            d.validate_delta(&a, &outside, &LIMITS, true),
            Err(DocError::DotOutsideContext { .. })
        ));
    }

    #[test]
    fn a_context_may_not_cover_another_actors_dots_not_seen_here() {
        let (a, b) = (ActorId::from_index(1), ActorId::from_index(2));
        let mut d = doc();
        let bs = d.prepare(b, ts(1), &Op::new("x", OpKind::Incr(5))).unwrap();
        d.apply(&bs);
        // `a` deletes `x` having seen b's one dot: fine.
        let del = d.prepare(a, ts(2), &Op::new("x", OpKind::Delete)).unwrap();
        assert!(d.validate_delta(&a, &del, &LIMITS, true).is_ok());
        // The same delete claiming four billion of b's dots: b's future writes would
        // vanish on arrival. Held back until they exist here.
        let mut greedy = del.clone();
        greedy.ctx.insert_range(b, 1, 1 << 32);
        assert_eq!(
            d.validate_delta(&a, &greedy, &LIMITS, true),
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
        let one = d.prepare(a, ts(1), &Op::new("x", OpKind::Incr(1))).unwrap();
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
        let first = d.prepare(a, ts(1), &Op::new("x", OpKind::Incr(1))).unwrap();
        d.apply(&first);
        // The same dot again, now under another key, as if it were a new write.
        let mut again = first.clone();
        let entry = again.store.0 .0.remove("x").unwrap();
        again.store.0 .0.insert("y".into(), entry);
        assert_eq!(
            d.validate_delta(&a, &again, &LIMITS, true),
            Err(DocError::StaleDot {
                counter: 1,
                known: 1
            })
        );
        // As part of a fold over deltas held here it is judged by the log instead.
        assert!(d.validate_delta(&a, &again, &LIMITS, false).is_ok());
    }
}
