//! Add-wins observed-remove set (OR-set): an element is present while any add of it has
//! not been observed by a remove, so an add concurrent with a remove wins.
//!
//! Each element keeps the dots of the adds that put it there; re-adding an element
//! replaces its observed dots, so an element normally holds one dot.

use crate::ctx::CausalContext;
use crate::dot::Dot;
use crate::id::ActorId;
use crate::store::{Causal, DotMap, DotSet};

/// An OR-set of `T` as a dot store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrSet<T: Ord>(pub(crate) DotMap<T, DotSet>);

impl<T: Ord> Default for OrSet<T> {
    fn default() -> Self {
        OrSet(DotMap::default())
    }
}

impl<T: Ord + Clone + std::fmt::Debug> OrSet<T> {
    pub fn contains(&self, member: &T) -> bool {
        self.0.get(member).is_some()
    }

    /// Members in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The delta that adds `members` as `actor`: one new dot per member.
    pub fn add(
        &self,
        ctx: &CausalContext,
        actor: ActorId,
        members: impl IntoIterator<Item = T>,
    ) -> Causal<Self> {
        let mut delta = Causal::<Self>::new();
        let first = ctx.next_dot(actor).counter;
        for (next, m) in (first..).zip(members) {
            if let Some(old) = self.0.get(&m) {
                old.iter().for_each(|d| delta.ctx.insert(*d));
            }
            if let Some(prev) = delta.store.0 .0.get(&m) {
                // Adding the same member twice in one delta: the first dot is superseded.
                prev.iter().for_each(|d| delta.ctx.insert(*d));
            }
            let dot = Dot::new(actor, next);
            delta.ctx.insert(dot);
            delta.store.0 .0.insert(m, DotSet::single(dot));
        }
        delta
    }

    /// The delta that removes `members` (the adds observed here; concurrent adds survive).
    pub fn remove<'a>(&self, members: impl IntoIterator<Item = &'a T>) -> Causal<Self>
    where
        T: 'a,
    {
        let mut delta = Causal::<Self>::new();
        for m in members {
            if let Some(dots) = self.0.get(m) {
                dots.iter().for_each(|d| delta.ctx.insert(*d));
            }
        }
        delta
    }

    pub fn entries(&self) -> impl Iterator<Item = (&T, &DotSet)> {
        self.0.iter()
    }
}

crate::store::forward_dot_store!(OrSet<T>);

impl<T: Ord + Clone + std::fmt::Debug> Causal<OrSet<T>> {
    /// Adds locally and returns the delta to ship.
    pub fn apply_add(
        &mut self,
        actor: ActorId,
        members: impl IntoIterator<Item = T>,
    ) -> Causal<OrSet<T>> {
        let delta = self.store.add(&self.ctx, actor, members);
        self.join_with(&delta);
        delta
    }

    /// Removes locally and returns the delta to ship.
    pub fn apply_remove(&mut self, members: &[T]) -> Causal<OrSet<T>> {
        let delta = self.store.remove(members);
        self.join_with(&delta);
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_wins_over_a_concurrent_remove() {
        let (a, b) = (ActorId::from_index(1), ActorId::from_index(2));
        let mut x = Causal::<OrSet<&str>>::new();
        x.apply_add(a, ["milk"]);
        let mut y = x.clone();
        x.apply_remove(&["milk"]);
        y.apply_add(b, ["milk"]);
        let merged = x.joined(&y);
        assert_eq!(merged, y.joined(&x));
        assert!(merged.store.contains(&"milk"));
    }

    #[test]
    fn an_observed_remove_deletes_even_if_the_add_arrives_later() {
        let a = ActorId::from_index(1);
        let mut origin = Causal::<OrSet<&str>>::new();
        let add = origin.apply_add(a, ["x"]);
        let mut remover = origin.clone();
        let rm = remover.apply_remove(&["x"]);
        // A third replica gets the remove before the add.
        let mut late = Causal::<OrSet<&str>>::new();
        late.join_with(&rm);
        late.join_with(&add);
        assert!(!late.store.contains(&"x"));
    }

    #[test]
    fn re_adding_keeps_one_dot_per_element() {
        let a = ActorId::from_index(1);
        let mut x = Causal::<OrSet<u32>>::new();
        for _ in 0..10 {
            x.apply_add(a, [7, 7]);
        }
        assert_eq!(x.store.entries().next().unwrap().1.len(), 1);
    }
}
