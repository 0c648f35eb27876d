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

    #[test]
    fn intersection_counts_shared_dots() {
        let b = ActorId::from_index(2);
        let mut x = CausalContext::new();
        x.insert_range(a(), 1, 10);
        x.insert_range(a(), 20, 30);
        x.insert_range(b, 1, 5);
        let mut y = CausalContext::new();
        y.insert_range(a(), 5, 25);
        y.insert_range(ActorId::from_index(3), 1, 5);
        assert_eq!(x.intersection_len(&y), 6 + 6);
        assert_eq!(y.intersection_len(&x), 12);
        assert_eq!(x.intersection_len(&x), 10 + 11 + 5);
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
