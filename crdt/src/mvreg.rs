//! Multi-value register: a write replaces the values it observed; concurrent writes are
//! all kept, so a reader sees every conflicting value and may resolve them with a write.

use crate::ctx::CausalContext;
use crate::dot::Dot;
use crate::id::ActorId;
use crate::store::{Causal, DotFun, DotStore};

/// A multi-value register as a dot store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MvRegister<T>(pub(crate) DotFun<T>);

impl<T> Default for MvRegister<T> {
    fn default() -> Self {
        MvRegister(DotFun::default())
    }
}

impl<T: Clone + Ord + std::fmt::Debug> MvRegister<T> {
    /// The concurrent values, sorted and without duplicates.
    pub fn values(&self) -> Vec<&T> {
        let mut v: Vec<&T> = self.0.iter().map(|(_, v)| v).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The delta that sets the register to `value` as `actor`.
    pub fn set(&self, ctx: &CausalContext, actor: ActorId, value: T) -> Causal<Self> {
        let dot = ctx.next_dot(actor);
        let mut delta = Causal {
            store: MvRegister::default(),
            ctx: self.dots(),
        };
        delta.ctx.insert(dot);
        delta.store.0 .0.insert(dot, value);
        delta
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Dot, &T)> {
        self.0.iter()
    }
}

crate::store::forward_dot_store!(MvRegister<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writes_are_all_kept_until_a_write_observes_them() {
        let (a, b) = (ActorId::from_index(1), ActorId::from_index(2));
        let base = Causal::<MvRegister<u32>>::new();
        let da = base.store.set(&base.ctx, a, 1);
        let db = base.store.set(&base.ctx, b, 2);
        let mut x = base.joined(&da).joined(&db);
        assert_eq!(x.store.values(), [&1, &2]);
        let dc = x.store.set(&x.ctx, a, 3);
        x.join_with(&dc);
        assert_eq!(x.store.values(), [&3]);
    }
}
