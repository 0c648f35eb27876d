//! Dot stores and the causal join that every CRDT type here is built from.
//!
//! A *dot store* holds values tagged with the dots of the writes that made them; a
//! [`Causal`] pairs a store with the [`CausalContext`] of every dot it has seen. Joining two
//! causal states keeps a dot if both stores hold it, or if one holds it and the other has
//! never seen it; a dot that one side has seen but no longer holds was removed there, and
//! stays removed. That single rule gives observed-remove semantics to sets, registers,
//! counters and maps alike, without tombstones and without causal delivery.
//!
//! Laws (checked by `tests/laws.rs` for every type): join is commutative, associative and
//! idempotent, and joining a mutator's delta equals joining the fully mutated state.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Debug;

use smallvec::SmallVec;

use crate::ctx::CausalContext;
use crate::dot::Dot;
use crate::lattice::Lattice;

/// A store of dot-tagged values, joined under causal contexts.
pub trait DotStore: Clone + Default + PartialEq + Debug {
    /// True if the store holds no dot at all.
    fn is_bottom(&self) -> bool;

    /// Calls `f` with every dot held, in order.
    fn for_each_dot(&self, f: &mut dyn FnMut(&Dot));

    /// Joins `other` into `self` under the contexts in `j`. Contexts are joined by the
    /// caller afterwards.
    fn join(&mut self, other: &Self, j: &Join<'_>);

    /// Every dot held, as a context.
    fn dots(&self) -> CausalContext {
        let mut c = CausalContext::new();
        self.for_each_dot(&mut |d| c.insert(*d));
        c
    }
}

/// The contexts of one join, and how many dots it may still remove outside the keys the
/// other side names.
///
/// Joining a small delta into a large map only needs to visit the keys the delta holds,
/// unless the delta's context covers dots held elsewhere (a remove or delete). The join
/// counts those candidates up front; each removal spends one, and a map skips scanning
/// its other keys once none are left. This relies on each dot naming one write at one
/// place, which every honest author guarantees.
pub struct Join<'a> {
    /// Context of the state being joined into.
    pub ctx: &'a CausalContext,
    /// Context of the other side.
    pub other_ctx: &'a CausalContext,
    removable: Cell<u64>,
}

impl<'a> Join<'a> {
    /// A join that assumes any dot may be removed anywhere (always exact).
    pub fn full(ctx: &'a CausalContext, other_ctx: &'a CausalContext) -> Self {
        Join {
            ctx,
            other_ctx,
            removable: Cell::new(u64::MAX),
        }
    }

    /// Records that a held dot was removed because the other side had seen it.
    fn removed(&self) {
        self.removable.set(self.removable.get().saturating_sub(1));
    }

    /// True while some held dot may still have to be removed.
    fn may_remove(&self) -> bool {
        self.removable.get() > 0
    }
}

/// Implements [`DotStore`] for a newtype over another dot store by forwarding to it.
macro_rules! forward_dot_store {
    ($ty:ident $(<$g:ident>)?) => {
        impl$(<$g: Clone + Ord + std::fmt::Debug>)? $crate::store::DotStore for $ty$(<$g>)? {
            fn is_bottom(&self) -> bool {
                self.0.is_bottom()
            }
            fn for_each_dot(&self, f: &mut dyn FnMut(&$crate::dot::Dot)) {
                self.0.for_each_dot(f)
            }
            fn join(&mut self, other: &Self, j: &$crate::store::Join<'_>) {
                self.0.join(&other.0, j)
            }
        }
    };
}
pub(crate) use forward_dot_store;

/// A set of dots: the dots under which one element of an OR-set was added.
/// Sorted, no duplicates; almost always a single dot, kept inline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DotSet(pub(crate) SmallVec<[Dot; 1]>);

impl DotSet {
    pub fn single(dot: Dot) -> Self {
        DotSet(smallvec::smallvec![dot])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Dot> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Builds a set from untrusted dots; `None` unless strictly increasing and non-empty.
    pub(crate) fn from_sorted(dots: SmallVec<[Dot; 1]>) -> Option<Self> {
        let sorted = dots.windows(2).all(|w| w[0] < w[1]);
        (sorted && !dots.is_empty()).then_some(DotSet(dots))
    }
}

impl DotStore for DotSet {
    fn is_bottom(&self) -> bool {
        self.0.is_empty()
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(&Dot)) {
        self.0.iter().for_each(f);
    }

    fn join(&mut self, other: &Self, j: &Join<'_>) {
        // Fast path: the same single dot on both sides (an element both replicas hold).
        if self.0 == other.0 {
            return;
        }
        let mut out: SmallVec<[Dot; 1]> = SmallVec::new();
        let (mut i, mut k) = (0, 0);
        let (a, b) = (&self.0, &other.0);
        while i < a.len() || k < b.len() {
            match (a.get(i), b.get(k)) {
                (Some(x), Some(y)) if x == y => {
                    out.push(*x);
                    i += 1;
                    k += 1;
                }
                (Some(x), y) if y.is_none_or(|y| x < y) => {
                    if j.other_ctx.contains(x) {
                        j.removed();
                    } else {
                        out.push(*x);
                    }
                    i += 1;
                }
                (_, Some(y)) => {
                    if !j.ctx.contains(y) {
                        out.push(*y);
                    }
                    k += 1;
                }
                _ => unreachable!("loop condition guarantees one side has an element"),
            }
        }
        self.0 = out;
    }
}

/// A map from dot to value: each live write of a register or counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DotFun<V>(pub(crate) BTreeMap<Dot, V>);

impl<V> Default for DotFun<V> {
    fn default() -> Self {
        DotFun(BTreeMap::new())
    }
}

impl<V> DotFun<V> {
    pub fn iter(&self) -> impl Iterator<Item = (&Dot, &V)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V: Clone + Ord + Debug> DotStore for DotFun<V> {
    fn is_bottom(&self) -> bool {
        self.0.is_empty()
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(&Dot)) {
        self.0.keys().for_each(f);
    }

    fn join(&mut self, other: &Self, j: &Join<'_>) {
        self.0.retain(|d, v| match other.0.get(d) {
            Some(ov) => {
                // One dot names one write, so both sides should agree; if an author
                // equivocated, keep the larger value so every replica picks the same one.
                if ov > v {
                    *v = ov.clone();
                }
                true
            }
            None => {
                let removed = j.other_ctx.contains(d);
                if removed {
                    j.removed();
                }
                !removed
            }
        });
        for (d, v) in &other.0 {
            if !self.0.contains_key(d) && !j.ctx.contains(d) {
                self.0.insert(*d, v.clone());
            }
        }
    }
}

/// A map from keys to nested dot stores: OR-set elements, or the keys of a map.
/// A key is present exactly while its store holds a dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DotMap<K: Ord, S>(pub(crate) BTreeMap<K, S>);

impl<K: Ord, S> Default for DotMap<K, S> {
    fn default() -> Self {
        DotMap(BTreeMap::new())
    }
}

impl<K: Ord, S> DotMap<K, S> {
    pub fn get(&self, k: &K) -> Option<&S> {
        self.0.get(k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &S)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Ord + Clone + Debug, S: DotStore> DotStore for DotMap<K, S> {
    fn is_bottom(&self) -> bool {
        self.0.is_empty()
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(&Dot)) {
        for s in self.0.values() {
            s.for_each_dot(f);
        }
    }

    fn join(&mut self, other: &Self, j: &Join<'_>) {
        if other.0.len() <= 4 || other.0.len().saturating_mul(8) < self.0.len() {
            self.join_small(other, j);
        } else {
            self.join_merge(other, j);
        }
    }
}

impl<K: Ord + Clone + Debug, S: DotStore> DotMap<K, S> {
    /// Joins a much smaller `other`: O(|other| log n) unless dots may be removed from keys
    /// `other` does not hold, which needs a scan of those keys.
    fn join_small(&mut self, other: &Self, j: &Join<'_>) {
        for (k, ov) in &other.0 {
            match self.0.get_mut(k) {
                Some(v) => {
                    v.join(ov, j);
                    if v.is_bottom() {
                        self.0.remove(k);
                    }
                }
                None => {
                    let mut v = S::default();
                    v.join(ov, j);
                    if !v.is_bottom() {
                        self.0.insert(k.clone(), v);
                    }
                }
            }
        }
        if j.may_remove() {
            let empty = S::default();
            self.0.retain(|k, v| {
                if !j.may_remove() || other.0.contains_key(k) {
                    return true;
                }
                v.join(&empty, j);
                !v.is_bottom()
            });
        }
    }

    /// Joins maps of comparable size: a merge walk over both sorted maps, rebuilding the
    /// map in one pass, O(n + m) with no re-balancing.
    fn join_merge(&mut self, other: &Self, j: &Join<'_>) {
        let empty = S::default();
        let mine = std::mem::take(&mut self.0);
        let mut out: Vec<(K, S)> = Vec::with_capacity(mine.len().max(other.0.len()));
        let mut theirs = other.0.iter().peekable();
        let push = |out: &mut Vec<(K, S)>, k: K, mut v: S, ov: &S| {
            v.join(ov, j);
            if !v.is_bottom() {
                out.push((k, v));
            }
        };
        for (k, v) in mine {
            while let Some((ok, ov)) = theirs.next_if(|(ok, _)| *ok < &k) {
                push(&mut out, ok.clone(), S::default(), ov);
            }
            match theirs.next_if(|(ok, _)| *ok == &k) {
                Some((_, ov)) => push(&mut out, k, v, ov),
                None => push(&mut out, k, v, &empty),
            }
        }
        for (ok, ov) in theirs {
            push(&mut out, ok.clone(), S::default(), ov);
        }
        self.0 = out.into_iter().collect();
    }
}

/// A dot store with its causal context: a complete, joinable CRDT state (or delta).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Causal<S> {
    pub store: S,
    pub ctx: CausalContext,
}

impl<S: DotStore> Causal<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins `other` into `self`.
    pub fn join_with(&mut self, other: &Causal<S>) {
        // Dots `other` has seen that `self` has too, less those `other` still holds: the
        // most dots this join can remove from `self`.
        let mut held_by_other = 0u64;
        other
            .store
            .for_each_dot(&mut |d| held_by_other += u64::from(self.ctx.contains(d)));
        let removable = self
            .ctx
            .intersection_len(&other.ctx)
            .saturating_sub(held_by_other);
        let j = Join {
            ctx: &self.ctx,
            other_ctx: &other.ctx,
            removable: Cell::new(removable),
        };
        self.store.join(&other.store, &j);
        self.ctx.union(&other.ctx);
    }

    /// The same join without the small-delta shortcut: every key is visited. Slower;
    /// property tests check that it always agrees with [`Causal::join_with`].
    pub fn join_exact(&mut self, other: &Causal<S>) {
        let j = Join::full(&self.ctx, &other.ctx);
        self.store.join(&other.store, &j);
        self.ctx.union(&other.ctx);
    }

    /// The join of `self` and `other`, leaving both unchanged.
    pub fn joined(&self, other: &Causal<S>) -> Causal<S> {
        let mut out = self.clone();
        out.join_with(other);
        out
    }
}

impl<S: DotStore> Lattice for Causal<S> {
    fn join(&mut self, other: &Self) {
        self.join_with(other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ActorId;

    fn d(a: u64, c: u64) -> Dot {
        Dot::new(ActorId::from_index(a), c)
    }

    fn ctx_of(dots: &[Dot]) -> CausalContext {
        let mut c = CausalContext::new();
        dots.iter().for_each(|x| c.insert(*x));
        c
    }

    #[test]
    fn a_dot_seen_and_dropped_on_one_side_stays_dropped() {
        let mut mine = DotSet::single(d(1, 1));
        let my_ctx = ctx_of(&[d(1, 1)]);
        let theirs = DotSet::default();
        let their_ctx = ctx_of(&[d(1, 1)]); // they saw it and removed it
        mine.join(&theirs, &Join::full(&my_ctx, &their_ctx));
        assert!(mine.is_bottom());
    }

    #[test]
    fn a_dot_the_other_side_never_saw_survives() {
        let mut mine = DotSet::single(d(1, 1));
        let my_ctx = ctx_of(&[d(1, 1)]);
        mine.join(
            &DotSet::default(),
            &Join::full(&my_ctx, &CausalContext::new()),
        );
        assert_eq!(mine, DotSet::single(d(1, 1)));
    }

    #[test]
    fn dot_maps_drop_keys_whose_dots_are_all_removed() {
        let mut m: DotMap<String, DotSet> = DotMap::default();
        m.0.insert("a".into(), DotSet::single(d(1, 1)));
        m.0.insert("b".into(), DotSet::single(d(1, 2)));
        let my_ctx = ctx_of(&[d(1, 1), d(1, 2)]);
        let mut other: DotMap<String, DotSet> = DotMap::default();
        other.0.insert("c".into(), DotSet::single(d(2, 1)));
        let other_ctx = ctx_of(&[d(1, 1), d(2, 1)]);
        m.join(&other, &Join::full(&my_ctx, &other_ctx));
        let keys: Vec<_> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "c"]);
    }
}
