//! The delta log: every delta a replica holds, by author and sequence number, and the
//! version vector that summarises it. Anti-entropy answers from here.

use std::collections::BTreeMap;

use super::message::SignedDelta;
use crate::id::ActorId;
use crate::vv::VersionVector;

/// A logged delta with its encoded size (for batching by bytes).
#[derive(Clone, Debug)]
struct Logged {
    delta: SignedDelta,
    size: usize,
}

/// Deltas held, per author, keyed by the first sequence number they cover. Each author's
/// entries are contiguous from 1 up to the version vector's entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeltaLog {
    authors: BTreeMap<ActorId, BTreeMap<u64, Logged>>,
    vv: VersionVector,
    entries: usize,
}

impl DeltaLog {
    pub(crate) fn vv(&self) -> &VersionVector {
        &self.vv
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Adds a delta that extends its author's contiguous run, or that folds entries already
    /// held. Entries it covers are dropped. Returns false (and changes nothing) if it would
    /// leave a gap.
    pub(crate) fn insert(&mut self, delta: SignedDelta, size: usize) -> bool {
        let known = self.vv.get(&delta.author);
        if delta.seqs.first > known.saturating_add(1) {
            return false;
        }
        let author = delta.author;
        let seqs = delta.seqs;
        let run = self.authors.entry(author).or_default();
        let covered: Vec<u64> = run
            .range(seqs.first..=seqs.last)
            .filter(|(_, l)| seqs.covers(&l.delta.seqs))
            .map(|(k, _)| *k)
            .collect();
        for k in covered {
            run.remove(&k);
            self.entries -= 1;
        }
        run.insert(seqs.first, Logged { delta, size });
        self.entries += 1;
        self.vv.advance(author, seqs.last);
        true
    }

    /// True if `delta` is a fold that would replace two or more held entries.
    pub(crate) fn would_fold(&self, delta: &SignedDelta) -> bool {
        let Some(run) = self.authors.get(&delta.author) else {
            return false;
        };
        run.range(delta.seqs.first..=delta.seqs.last)
            .filter(|(_, l)| delta.seqs.covers(&l.delta.seqs))
            .take(2)
            .count()
            == 2
    }

    /// The deltas a replica whose summary is `theirs` lacks, oldest first per author, at
    /// most `max_count` of them and about `max_bytes` (always at least one if any is
    /// missing). The flag says whether more remain.
    pub(crate) fn missing_for(
        &self,
        theirs: &VersionVector,
        max_count: usize,
        max_bytes: usize,
    ) -> (Vec<SignedDelta>, bool) {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (author, run) in &self.authors {
            let have = theirs.get(author);
            if self.vv.get(author) <= have {
                continue;
            }
            // The entry containing `have + 1` may start earlier (a fold): include it.
            let start = run
                .range(..=have.saturating_add(1))
                .next_back()
                .map_or(0, |(k, _)| *k);
            for (_, l) in run.range(start..) {
                if l.delta.seqs.last <= have {
                    continue;
                }
                if out.len() >= max_count || (!out.is_empty() && bytes + l.size > max_bytes) {
                    return (out, true);
                }
                bytes += l.size;
                out.push(l.delta.clone());
            }
        }
        (out, false)
    }

    /// Drops `author`'s entries that reach past sequence number `cut` (a fold straddling
    /// the cut goes whole). Returns true if anything was dropped.
    pub(crate) fn truncate_after(&mut self, author: &ActorId, cut: u64) -> bool {
        let Some(run) = self.authors.get_mut(author) else {
            return false;
        };
        let doomed: Vec<u64> = run
            .iter()
            .filter(|(_, l)| l.delta.seqs.last > cut)
            .map(|(k, _)| *k)
            .collect();
        for k in &doomed {
            run.remove(k);
        }
        self.entries -= doomed.len();
        let top = run.values().next_back().map_or(0, |l| l.delta.seqs.last);
        if run.is_empty() {
            self.authors.remove(author);
        }
        self.vv.retreat(*author, top);
        !doomed.is_empty()
    }

    /// `author`'s first `max` entries, oldest first.
    pub(crate) fn first_entries(&self, author: &ActorId, max: usize) -> Vec<&SignedDelta> {
        self.authors.get(author).map_or_else(Vec::new, |run| {
            run.values().take(max).map(|l| &l.delta).collect()
        })
    }

    /// Every delta held.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &SignedDelta> {
        self.authors
            .values()
            .flat_map(|run| run.values().map(|l| &l.delta))
    }
}
