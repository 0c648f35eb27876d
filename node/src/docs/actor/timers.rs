//! When each document next needs the actor's attention: the earliest of its replica's
//! timers (`Replica::poll_timeout`) and the deadline of a join waiting on it. A document
//! with nothing due is never visited, however many are hosted.

use std::collections::{BTreeSet, HashMap};

use lattice_crdt::DocId;

#[derive(Debug, Default)]
pub(super) struct Timers {
    by_time: BTreeSet<(u64, DocId)>,
    by_doc: HashMap<DocId, u64>,
}

impl Timers {
    /// Sets (or, with `None`, clears) when `doc` is next due, in ms since the epoch.
    pub fn set(&mut self, doc: DocId, at: Option<u64>) {
        if let Some(old) = self.by_doc.remove(&doc) {
            self.by_time.remove(&(old, doc));
        }
        if let Some(at) = at {
            self.by_doc.insert(doc, at);
            self.by_time.insert((at, doc));
        }
    }

    /// Makes `doc` due no later than `at`.
    pub fn at_most(&mut self, doc: DocId, at: u64) {
        let at = self.by_doc.get(&doc).map_or(at, |old| at.min(*old));
        self.set(doc, Some(at));
    }

    /// The earliest time anything is due.
    pub fn next(&self) -> Option<u64> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Takes every document due at `now`.
    pub fn due(&mut self, now: u64) -> Vec<DocId> {
        let mut out = Vec::new();
        while let Some(&(at, doc)) = self.by_time.first() {
            if at > now {
                break;
            }
            self.by_time.pop_first();
            self.by_doc.remove(&doc);
            out.push(doc);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_come_due_in_time_order_once_each() {
        let (a, b, c) = (DocId([1; 32]), DocId([2; 32]), DocId([3; 32]));
        let mut t = Timers::default();
        t.set(a, Some(30));
        t.set(b, Some(10));
        t.set(c, None);
        t.set(a, Some(20));
        t.at_most(b, 50);
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.due(25), vec![b, a]);
        assert!(t.due(1_000).is_empty());
        assert_eq!(t.next(), None);
    }
}
