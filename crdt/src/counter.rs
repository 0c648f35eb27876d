//! PN-counter: a counter every replica may increment or decrement.
//!
//! Each actor keeps one live entry holding its running totals of increments and
//! decrements, tagged with the dot of its latest write; a new write replaces the actor's
//! previous entry. The value is the sum over live entries of `inc - dec`.
//!
//! Inside a map, removing the key resets the counter: entries the remover had observed
//! are dropped. An actor that incremented concurrently with the remove keeps its entry,
//! i.e. its whole running total (add-wins per actor).

use serde::{Deserialize, Serialize};

use crate::ctx::CausalContext;
use crate::dot::Dot;
use crate::id::ActorId;
use crate::store::{Causal, DotFun};

/// The largest running total one actor's entry may hold; larger values are refused so the
/// sum over all actors can never overflow.
pub const MAX_ENTRY_TOTAL: u64 = i64::MAX as u64;

/// One actor's running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PnEntry {
    pub inc: u64,
    pub dec: u64,
}

/// A write the counter refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CounterError {
    #[error("counter overflow: adding {by} to {actor}'s total {total} exceeds {MAX_ENTRY_TOTAL}")]
    Overflow { actor: ActorId, total: u64, by: u64 },
}

/// A PN-counter as a dot store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PnCounter(pub(crate) DotFun<PnEntry>);

impl PnCounter {
    /// Sum of all live entries. Cannot overflow: entries are bounded by [`MAX_ENTRY_TOTAL`].
    pub fn value(&self) -> i128 {
        self.0
            .iter()
            .map(|(_, e)| i128::from(e.inc) - i128::from(e.dec))
            .sum()
    }

    /// `actor`'s live entries: normally at most one.
    fn own(&self, actor: &ActorId) -> impl Iterator<Item = (&Dot, &PnEntry)> {
        self.0
             .0
            .range(Dot::new(*actor, 0)..=Dot::new(*actor, u64::MAX))
    }

    /// The delta that adds `by` (which may be negative) to the counter as `actor`.
    /// `ctx` is the context of the state this counter lives in.
    pub fn incr(
        &self,
        ctx: &CausalContext,
        actor: ActorId,
        by: i64,
    ) -> Result<Causal<PnCounter>, CounterError> {
        let mut base = self.own(&actor).map(|(_, e)| *e).max().unwrap_or_default();
        let (total, amount) = if by >= 0 {
            (&mut base.inc, by.unsigned_abs())
        } else {
            (&mut base.dec, by.unsigned_abs())
        };
        *total = total
            .checked_add(amount)
            .filter(|t| *t <= MAX_ENTRY_TOTAL)
            .ok_or(CounterError::Overflow {
                actor,
                total: *total,
                by: amount,
            })?;
        let dot = ctx.next_dot(actor);
        let mut delta = Causal::<PnCounter>::new();
        for (d, _) in self.own(&actor) {
            delta.ctx.insert(*d);
        }
        delta.ctx.insert(dot);
        delta.store.0 .0.insert(dot, base);
        Ok(delta)
    }

    /// The largest total any entry holds (for validating untrusted deltas).
    pub fn max_entry(&self) -> u64 {
        self.0
            .iter()
            .map(|(_, e)| e.inc.max(e.dec))
            .max()
            .unwrap_or(0)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Dot, &PnEntry)> {
        self.0.iter()
    }
}

crate::store::forward_dot_store!(PnCounter);

impl Causal<PnCounter> {
    /// Applies an increment locally and returns the delta to ship.
    pub fn apply_incr(
        &mut self,
        actor: ActorId,
        by: i64,
    ) -> Result<Causal<PnCounter>, CounterError> {
        let delta = self.store.incr(&self.ctx, actor, by)?;
        self.join_with(&delta);
        Ok(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_from_several_actors_sum_up() {
        let (a, b) = (ActorId::from_index(1), ActorId::from_index(2));
        let mut x = Causal::<PnCounter>::new();
        let mut y = Causal::<PnCounter>::new();
        x.apply_incr(a, 5).unwrap();
        x.apply_incr(a, -2).unwrap();
        y.apply_incr(b, 10).unwrap();
        x.join_with(&y);
        y.join_with(&x);
        assert_eq!(x.store.value(), 13);
        assert_eq!(x, y);
        // One live entry per actor, however many writes.
        assert_eq!(x.store.0.len(), 2);
    }

    #[test]
    fn overflow_is_refused_and_changes_nothing() {
        let a = ActorId::from_index(1);
        let mut x = Causal::<PnCounter>::new();
        x.apply_incr(a, i64::MAX).unwrap();
        let before = x.clone();
        let err = x.apply_incr(a, 1).unwrap_err();
        assert!(matches!(err, CounterError::Overflow { by: 1, .. }));
        assert_eq!(x, before);
        // Decrements have their own total, so they still work, up to the same bound.
        assert!(x.apply_incr(a, i64::MIN).is_err());
        x.apply_incr(a, -i64::MAX).unwrap();
        assert_eq!(x.store.value(), 0);
    }
}
