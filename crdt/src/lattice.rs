//! The one law every replicated state obeys: a join-semilattice. On its own so that the
//! types implementing it (version vectors, causal contexts, dot stores) depend on it and
//! not on each other.

/// A join-semilattice: the one operation every replicated state offers.
pub trait Lattice: Clone {
    /// Merges `other` into `self` (least upper bound).
    fn join(&mut self, other: &Self);
}
