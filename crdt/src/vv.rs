//! Version vectors: for each actor, the highest number seen with nothing missing below it.
//!
//! The sync protocol summarises "which deltas do I hold" as a version vector of authors'
//! sequence numbers; two replicas compare vectors to find exactly what the other lacks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::ActorId;

/// A map from actor to a contiguous high-water mark; absent actors are at 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<ActorId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The high-water mark of `actor` (0 if never seen).
    pub fn get(&self, actor: &ActorId) -> u64 {
        self.0.get(actor).copied().unwrap_or(0)
    }

    /// Raises `actor`'s entry to `n` if it is lower.
    pub fn advance(&mut self, actor: ActorId, n: u64) {
        if n == 0 {
            return;
        }
        let e = self.0.entry(actor).or_insert(0);
        *e = (*e).max(n);
    }

    /// Lowers `actor`'s entry to `n` if it is higher (deltas were dropped).
    pub fn retreat(&mut self, actor: ActorId, n: u64) {
        if n == 0 {
            self.0.remove(&actor);
        } else if let Some(e) = self.0.get_mut(&actor) {
            *e = (*e).min(n);
        }
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        for (a, n) in &other.0 {
            self.advance(*a, *n);
        }
    }

    /// True if every entry of `other` is at most the matching entry here.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(a, n)| self.get(a) >= *n)
    }

    /// True if `other` has any entry above the matching entry here.
    pub fn lacks_any_of(&self, other: &VersionVector) -> bool {
        !self.dominates(other)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ActorId, &u64)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sum of all entries: the number of events this vector covers.
    pub fn total(&self) -> u128 {
        self.0.values().map(|n| u128::from(*n)).sum()
    }
}

impl FromIterator<(ActorId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (a, n) in iter {
            vv.advance(a, n);
        }
        vv
    }
}

impl crate::lattice::Lattice for VersionVector {
    fn join(&mut self, other: &Self) {
        VersionVector::join(self, other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_is_pointwise_max_and_dominates_follows() {
        let a = ActorId::from_index(1);
        let b = ActorId::from_index(2);
        let mut x: VersionVector = [(a, 3), (b, 1)].into_iter().collect();
        let y: VersionVector = [(b, 5)].into_iter().collect();
        assert!(!x.dominates(&y) && !y.dominates(&x));
        assert!(x.lacks_any_of(&y));
        x.join(&y);
        assert_eq!((x.get(&a), x.get(&b)), (3, 5));
        assert!(x.dominates(&y));
        assert_eq!(x.total(), 8);
    }

    #[test]
    fn zero_entries_are_not_stored() {
        let mut v = VersionVector::new();
        v.advance(ActorId::from_index(1), 0);
        assert!(v.is_empty());
    }
}
