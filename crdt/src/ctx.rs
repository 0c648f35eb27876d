//! Causal contexts: the set of every dot a state (or a delta) has seen, including dots that
//! arrived out of order.
//!
//! Each actor's dots are kept as sorted, disjoint, non-adjacent inclusive ranges, so dots
//! that become contiguous compact into one range as soon as the gap fills. A context whose
//! every actor has the single range `1..=n` is exactly a version vector.

use std::collections::BTreeMap;

use smallvec::SmallVec;

use crate::dot::Dot;
use crate::id::ActorId;
use crate::vv::VersionVector;

/// Inclusive dot-counter ranges of one actor: sorted, disjoint and never adjacent.
pub type Ranges = SmallVec<[(u64, u64); 1]>;

/// A context that cannot be right: a range that is empty, overlapping or out of order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed causal context for actor {actor}: {reason}")]
pub struct ContextError {
    pub actor: ActorId,
    pub reason: &'static str,
}

/// The dots seen by a state or a delta.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CausalContext {
    actors: BTreeMap<ActorId, Ranges>,
}

impl CausalContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// True if `dot` has been seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        match self.actors.get(&dot.actor) {
            Some(r) => ranges_contain(r, dot.counter),
            None => false,
        }
    }

    /// True if every dot `lo..=hi` of `actor` has been seen.
    pub fn contains_range(&self, actor: &ActorId, lo: u64, hi: u64) -> bool {
        let Some(r) = self.actors.get(actor) else {
            return false;
        };
        let idx = r.partition_point(|&(l, _)| l <= lo);
        idx > 0 && r[idx - 1].1 >= hi
    }

    /// Fills each gap between two ranges of an actor (other than `except`) that `fill`
    /// covers whole: the dots here stay, the ranges become fewer.
    pub fn close_gaps(&mut self, fill: &CausalContext, except: &ActorId) {
        for (actor, ranges) in &mut self.actors {
            if actor == except || ranges.len() < 2 {
                continue;
            }
            let mut merged = Ranges::new();
            for &(lo, hi) in ranges.iter() {
                match merged.last_mut() {
                    Some(last) if fill.contains_range(actor, last.1 + 1, lo - 1) => last.1 = hi,
                    _ => merged.push((lo, hi)),
                }
            }
            *ranges = merged;
        }
    }

    /// The highest counter seen from `actor` (0 if none).
    pub fn max(&self, actor: &ActorId) -> u64 {
        self.actors
            .get(actor)
            .and_then(|r| r.last())
            .map_or(0, |r| r.1)
    }

    /// The dot `actor` uses for its next event: one past the highest it has used.
    pub fn next_dot(&self, actor: ActorId) -> Dot {
        Dot::new(actor, self.max(&actor) + 1)
    }

    /// Records one dot.
    pub fn insert(&mut self, dot: Dot) {
        self.insert_range(dot.actor, dot.counter, dot.counter);
    }

    /// Records the dots `lo..=hi` of `actor`; merges with neighbouring ranges.
    pub fn insert_range(&mut self, actor: ActorId, lo: u64, hi: u64) {
        debug_assert!(lo >= 1 && lo <= hi);
        let r = self.actors.entry(actor).or_default();
        insert_range(r, lo, hi);
    }

    /// Adds every dot of `other`.
    pub fn union(&mut self, other: &CausalContext) {
        for (actor, ranges) in &other.actors {
            match self.actors.get_mut(actor) {
                Some(mine) => {
                    for &(lo, hi) in ranges {
                        insert_range(mine, lo, hi);
                    }
                }
                None => {
                    self.actors.insert(*actor, ranges.clone());
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    /// How many dots are in both contexts (saturating).
    pub fn intersection_len(&self, other: &CausalContext) -> u64 {
        if other.actors.len() < self.actors.len() {
            return other.intersection_len(self);
        }
        let mut n = 0u64;
        for (actor, mine) in &self.actors {
            let Some(theirs) = other.actors.get(actor) else {
                continue;
            };
            let (mut i, mut j) = (0, 0);
            while i < mine.len() && j < theirs.len() {
                let (lo, hi) = (mine[i].0.max(theirs[j].0), mine[i].1.min(theirs[j].1));
                if lo <= hi {
                    n = n.saturating_add(hi - lo + 1);
                }
                if mine[i].1 < theirs[j].1 {
                    i += 1;
                } else {
                    j += 1;
                }
            }
        }
        n
    }

    /// The dots here that `other` lacks.
    pub fn difference(&self, other: &CausalContext) -> CausalContext {
        let mut out = CausalContext::new();
        for (actor, mine) in &self.actors {
            let theirs = other.actors.get(actor).map_or(&[][..], |r| r.as_slice());
            let mut j = 0;
            for &(lo, hi) in mine {
                // The first dot of this range not yet judged; None once all are.
                let mut from = Some(lo);
                // Skip their ranges wholly before this one; cut out those inside it.
                while j < theirs.len() && theirs[j].1 < lo {
                    j += 1;
                }
                let mut k = j;
                while let Some(f) = from {
                    let Some(&(tlo, thi)) = theirs.get(k).filter(|t| t.0 <= hi) else {
                        break;
                    };
                    if tlo > f {
                        out.insert_range(*actor, f, tlo - 1);
                    }
                    from = thi.checked_add(1).map(|n| n.max(f)).filter(|n| *n <= hi);
                    k += 1;
                }
                if let Some(f) = from {
                    out.insert_range(*actor, f, hi);
                }
            }
        }
        out
    }

    /// The actors that have any dot here, in order.
    pub fn actors(&self) -> impl Iterator<Item = &ActorId> {
        self.actors.keys()
    }

    /// Each actor with its ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ActorId, &Ranges)> {
        self.actors.iter()
    }

    /// The contiguous prefix of each actor (`1..=n`), as a version vector.
    pub fn version_vector(&self) -> VersionVector {
        self.actors
            .iter()
            .filter_map(|(a, r)| r.first().filter(|f| f.0 == 1).map(|f| (*a, f.1)))
            .collect()
    }

    /// Number of ranges held beyond one per actor: how many gaps are waiting to fill.
    pub fn gaps(&self) -> usize {
        self.actors
            .values()
            .map(|r| r.len().saturating_sub(1))
            .sum()
    }

    /// Builds a context from untrusted ranges, refusing any that break the invariants.
    pub fn from_ranges(
        actors: impl IntoIterator<Item = (ActorId, Ranges)>,
    ) -> Result<Self, ContextError> {
        let mut out = BTreeMap::new();
        for (actor, ranges) in actors {
            let bad = |reason| ContextError { actor, reason };
            if ranges.is_empty() {
                return Err(bad("no ranges"));
            }
            let mut prev_hi = 0u64;
            for (i, &(lo, hi)) in ranges.iter().enumerate() {
                if lo == 0 || lo > hi {
                    return Err(bad("empty range or zero counter"));
                }
                if i > 0 && lo <= prev_hi.saturating_add(1) {
                    return Err(bad("ranges overlap, touch or are out of order"));
                }
                prev_hi = hi;
            }
            if out.insert(actor, ranges).is_some() {
                return Err(bad("actor listed twice"));
            }
        }
        Ok(CausalContext { actors: out })
    }
}

impl crate::lattice::Lattice for CausalContext {
    fn join(&mut self, other: &Self) {
        self.union(other);
    }
}

fn ranges_contain(r: &Ranges, n: u64) -> bool {
    // Ranges are sorted by start; find the last range starting at or before n.
    let idx = r.partition_point(|&(lo, _)| lo <= n);
    idx > 0 && r[idx - 1].1 >= n
}

fn insert_range(r: &mut Ranges, lo: u64, hi: u64) {
    // Fast path: appending at or after the end, the common case for new writes.
    if let Some(last) = r.last_mut() {
        if lo >= last.0 && lo <= last.1.saturating_add(1) {
            last.1 = last.1.max(hi);
            return;
        }
        if lo > last.1 {
            r.push((lo, hi));
            return;
        }
    } else {
        r.push((lo, hi));
        return;
    }
    // General case: merge every range that overlaps or touches [lo, hi].
    let start = r.partition_point(|&(_, h)| h.saturating_add(1) < lo);
    let mut end = start;
    let (mut nlo, mut nhi) = (lo, hi);
    while end < r.len() && r[end].0 <= nhi.saturating_add(1) {
        nlo = nlo.min(r[end].0);
        nhi = nhi.max(r[end].1);
        end += 1;
    }
    r.drain(start..end);
    r.insert(start, (nlo, nhi));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> ActorId {
        ActorId::from_index(1)
    }

    #[test]
    fn out_of_order_dots_compact_when_the_gap_fills() {
        let mut c = CausalContext::new();
        c.insert(Dot::new(a(), 1));
        c.insert(Dot::new(a(), 3));
        c.insert(Dot::new(a(), 5));
        assert_eq!(c.gaps(), 2);
        assert!(!c.contains(&Dot::new(a(), 2)));
        assert_eq!(c.version_vector().get(&a()), 1);
        c.insert(Dot::new(a(), 2));
        c.insert(Dot::new(a(), 4));
        assert_eq!(c.gaps(), 0);
        assert_eq!(c.version_vector().get(&a()), 5);
        assert_eq!(c.next_dot(a()), Dot::new(a(), 6));
    }

    #[test]
    fn union_merges_overlapping_ranges() {
        let mut x = CausalContext::new();
        x.insert_range(a(), 1, 3);
        x.insert_range(a(), 10, 12);
        let mut y = CausalContext::new();
        y.insert_range(a(), 2, 11);
        x.union(&y);
        assert_eq!(x.iter().next().unwrap().1.as_slice(), &[(1, 12)]);
    }

    /// A context of `(actor index, lo, hi)` ranges.
    fn ctx_of(ranges: &[(u64, u64, u64)]) -> CausalContext {
        let mut c = CausalContext::new();
        for &(actor, lo, hi) in ranges {
            c.insert_range(ActorId::from_index(actor), lo, hi);
        }
        c
    }

    #[test]
    fn intersection_counts_shared_dots() {
        let x = ctx_of(&[(1, 1, 10), (1, 20, 30), (2, 1, 5)]);
        let y = ctx_of(&[(1, 5, 25), (3, 1, 5)]);
        assert_eq!(x.intersection_len(&y), 6 + 6);
        assert_eq!(y.intersection_len(&x), 12);
        assert_eq!(x.intersection_len(&x), 10 + 11 + 5);
    }

    #[test]
    fn difference_cuts_the_other_contexts_dots_out() {
        let b = ActorId::from_index(2);
        let x = ctx_of(&[(1, 1, 10), (1, 20, 30), (2, 1, 5)]);
        let y = ctx_of(&[(1, 1, 1), (1, 4, 5), (1, 10, 21), (1, 30, 30), (3, 1, 5)]);
        let d = x.difference(&y);
        let ranges: Vec<_> = d.iter().map(|(k, r)| (*k, r.to_vec())).collect();
        assert_eq!(
            ranges,
            [(a(), vec![(2, 3), (6, 9), (22, 29)]), (b, vec![(1, 5)])]
        );
        assert!(x.difference(&x).is_empty());
        // Dot by dot, the difference is exactly what one has and the other lacks.
        for n in 1..=32 {
            let dot = Dot::new(a(), n);
            assert_eq!(
                d.contains(&dot),
                x.contains(&dot) && !y.contains(&dot),
                "{n}"
            );
        }
        // Ranges that reach the last counter.
        let mut big = CausalContext::new();
        big.insert_range(a(), 1, u64::MAX);
        let mut top = CausalContext::new();
        top.insert_range(a(), u64::MAX - 1, u64::MAX);
        assert_eq!(big.difference(&top).max(&a()), u64::MAX - 2);
        assert!(top.difference(&big).is_empty());
    }

    #[test]
    fn gaps_close_only_where_the_fill_covers_them_whole() {
        let b = ActorId::from_index(2);
        let mut x = CausalContext::new();
        for (lo, hi) in [(1, 2), (5, 5), (9, 9), (12, 20)] {
            x.insert_range(a(), lo, hi);
            x.insert_range(b, lo, hi);
        }
        let mut fill = CausalContext::new();
        for who in [a(), b] {
            fill.insert_range(who, 3, 4);
            fill.insert_range(who, 6, 7);
            fill.insert_range(who, 10, 11);
        }
        let before = x.clone();
        x.close_gaps(&fill, &b);
        let ranges = |c: &CausalContext, who: &ActorId| {
            c.iter().find(|(k, _)| *k == who).unwrap().1.to_vec()
        };
        assert_eq!(ranges(&x, &a()), [(1, 5), (9, 20)]);
        assert_eq!(ranges(&x, &b), ranges(&before, &b));
        assert!(fill.contains_range(&a(), 3, 4) && !fill.contains_range(&a(), 3, 5));
        assert!(!fill.contains_range(&ActorId::from_index(3), 1, 1));
    }

    proptest::proptest! {
        #[test]
        fn difference_agrees_with_dot_by_dot(
            xs in proptest::collection::vec((1u64..64, 0u64..6), 0..12),
            ys in proptest::collection::vec((1u64..64, 0u64..6), 0..12),
        ) {
            let build = |rs: &[(u64, u64)]| {
                let mut c = CausalContext::new();
                for &(lo, len) in rs {
                    c.insert_range(a(), lo, lo + len);
                }
                c
            };
            let (x, y) = (build(&xs), build(&ys));
            let d = x.difference(&y);
            for n in 1..80 {
                let dot = Dot::new(a(), n);
                proptest::prop_assert_eq!(d.contains(&dot), x.contains(&dot) && !y.contains(&dot));
            }
        }
    }

    #[test]
    fn inserting_inside_existing_ranges_changes_nothing() {
        let mut x = CausalContext::new();
        x.insert_range(a(), 1, 10);
        let before = x.clone();
        x.insert(Dot::new(a(), 5));
        x.insert_range(a(), 3, 4);
        assert_eq!(x, before);
    }

    #[test]
    fn a_context_starting_after_one_has_no_version_vector_entry() {
        let mut x = CausalContext::new();
        x.insert_range(a(), 4, 9);
        assert_eq!(x.version_vector().get(&a()), 0);
        assert_eq!(x.max(&a()), 9);
    }

    #[test]
    fn untrusted_ranges_are_validated() {
        let ok: Ranges = smallvec::smallvec![(1, 2), (4, 4)];
        assert!(CausalContext::from_ranges([(a(), ok)]).is_ok());
        for bad in [
            smallvec::smallvec![(0, 2)],
            smallvec::smallvec![(3, 2)],
            smallvec::smallvec![(1, 2), (3, 4)],
            smallvec::smallvec![(5, 6), (1, 2)],
            Ranges::new(),
        ] {
            assert!(CausalContext::from_ranges([(a(), bad)]).is_err());
        }
    }
}
