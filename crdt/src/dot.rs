//! Dots: the unique name of one write event, `(actor, counter)`.

use crate::id::ActorId;

/// The `counter`-th event created by `actor`; counters start at 1 and have no gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    pub actor: ActorId,
    pub counter: u64,
}

impl Dot {
    pub fn new(actor: ActorId, counter: u64) -> Self {
        Dot { actor, counter }
    }
}
