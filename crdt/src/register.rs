//! Last-writer-wins register: the value with the greatest hybrid timestamp wins; equal
//! timestamps are broken by the writer's actor id, then by the value itself.
//!
//! A write replaces every entry it observed, so a register normally holds one entry;
//! concurrent writes each keep an entry until a later write observes them, and the value
//! is the greatest of them. Inside a map, removing the key drops the observed entries.

use crate::clock::Timestamp;
use crate::ctx::CausalContext;
use crate::dot::Dot;
use crate::id::ActorId;
use crate::store::{Causal, DotFun, DotStore};

/// An LWW register as a dot store; `T` is the value type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LwwRegister<T>(pub(crate) DotFun<(Timestamp, T)>);

impl<T> Default for LwwRegister<T> {
    fn default() -> Self {
        LwwRegister(DotFun::default())
    }
}

impl<T: Clone + Ord + std::fmt::Debug> LwwRegister<T> {
    /// The winning value with its timestamp and writer, if any.
    pub fn winner(&self) -> Option<(Timestamp, ActorId, &T)> {
        self.0
            .iter()
            .map(|(d, (ts, v))| (*ts, d.actor, v))
            .max_by(|x, y| (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2)))
    }

    pub fn value(&self) -> Option<&T> {
        self.winner().map(|w| w.2)
    }

    /// The delta that sets the register to `value` at time `ts` as `actor`.
    pub fn set(
        &self,
        ctx: &CausalContext,
        actor: ActorId,
        ts: Timestamp,
        value: T,
    ) -> Causal<Self> {
        let dot = ctx.next_dot(actor);
        let mut delta = Causal {
            store: LwwRegister::default(),
            ctx: self.dots(),
        };
        delta.ctx.insert(dot);
        delta.store.0 .0.insert(dot, (ts, value));
        delta
    }

    /// Every timestamp held (for validating untrusted deltas).
    pub fn timestamps(&self) -> impl Iterator<Item = Timestamp> + '_ {
        self.0.iter().map(|(_, (ts, _))| *ts)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Dot, &(Timestamp, T))> {
        self.0.iter()
    }
}

crate::store::forward_dot_store!(LwwRegister<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_timestamp_wins_whatever_the_merge_order() {
        let (a, b) = (ActorId::from_index(1), ActorId::from_index(2));
        let base = Causal::<LwwRegister<u32>>::new();
        let da = base.store.set(&base.ctx, a, Timestamp::at(20), 1);
        let db = base.store.set(&base.ctx, b, Timestamp::at(10), 2);
        let x = base.joined(&da).joined(&db);
        let y = base.joined(&db).joined(&da);
        assert_eq!(x, y);
        assert_eq!(x.store.value(), Some(&1));
    }

    #[test]
    fn equal_timestamps_are_broken_by_actor_id() {
        let (a, b) = (ActorId::from_index(1), ActorId::from_index(2));
        let base = Causal::<LwwRegister<u32>>::new();
        let da = base.store.set(&base.ctx, a, Timestamp::at(10), 1);
        let db = base.store.set(&base.ctx, b, Timestamp::at(10), 2);
        assert_eq!(base.joined(&da).joined(&db).store.value(), Some(&2));
    }

    #[test]
    fn a_write_replaces_what_it_observed() {
        let a = ActorId::from_index(1);
        let mut x = Causal::<LwwRegister<u32>>::new();
        for i in 0..5 {
            let d = x.store.set(&x.ctx, a, Timestamp::at(i), i as u32);
            x.join_with(&d);
        }
        assert_eq!(x.store.0.len(), 1);
        assert_eq!(x.store.value(), Some(&4));
    }
}
