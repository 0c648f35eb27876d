//! The delta log: every delta a replica holds, by author and sequence number, and the
//! version vector that summarises it. Anti-entropy answers from here.

use std::collections::BTreeMap;

use super::message::{SeqRange, SignedDelta};
use crate::id::ActorId;
use crate::store::DotStore;
use crate::vv::VersionVector;

/// How an incoming delta relates to the entries of its author already held.
#[derive(Debug)]
pub(crate) enum Overlap<'a> {
    /// It overlaps none of them.
    New,
    /// The very same entry (same range, same signature) is held.
    Same,
    /// A held fold covers it.
    Covered,
    /// It is a fold over these held entries (and may reach past them).
    Covers(Vec<&'a SignedDelta>),
    /// A held entry with the same range but another signature, or overlapping it without
    /// either covering the other: one author signed two versions of the same writes.
    Conflict(&'a SignedDelta),
}

/// True if `small`'s content is contained in `big`'s: joining it changes nothing. The
/// exact join: the fast one trusts that a dot sits in one place, which is what is in
/// question when one author's deltas are compared.
pub(crate) fn contained(small: &crate::doc::Delta, big: &crate::doc::Delta) -> bool {
    let mut joined = big.clone();
    joined.join_exact(small);
    joined == *big
}

/// True if `thin` is `full` with some of its values left out and its context grown, and
/// nothing else changed: what compaction makes when it re-signs writes whose values, and
/// dots of other writers they cover, died everywhere (`replica/compact.rs`). Joining
/// `full` into `thin` changes nothing.
pub(crate) fn resigned(thin: &crate::doc::Delta, full: &crate::doc::Delta) -> bool {
    let kept = thin.store.dots();
    let mut gone = crate::ctx::CausalContext::new();
    full.store.for_each_dot(&mut |d| {
        if !kept.contains(d) {
            gone.insert(*d);
        }
    });
    let mut expected = full.clone();
    expected.join_exact(&crate::store::Causal {
        store: Default::default(),
        ctx: gone,
    });
    expected.ctx.union(&thin.ctx);
    expected == *thin
}

/// The first 8 bytes of the BLAKE3 hash of a delta's signature.
pub(crate) fn fingerprint(d: &SignedDelta) -> u64 {
    let h = blake3::hash(&d.signature);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

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
    /// Per author, a hash chained over its entries in order (ranges and fingerprints):
    /// equal chains mean the same entries. Extended on appends, rebuilt on folds and cuts.
    chains: BTreeMap<ActorId, blake3::Hash>,
    /// Per author, its newest dot in its own entries.
    own: BTreeMap<ActorId, u64>,
    vv: VersionVector,
    entries: usize,
    /// Encoded bytes of every entry held.
    bytes: usize,
}

/// Entries of one author listed in a [`super::Message::Entries`], at most.
pub(crate) const MAX_LISTED: usize = 4_096;

fn chain_step(prev: Option<&blake3::Hash>, d: &SignedDelta) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(prev.map_or(&[0u8; 32], |p| p.as_bytes()));
    h.update(&d.seqs.first.to_le_bytes());
    h.update(&d.seqs.last.to_le_bytes());
    h.update(&fingerprint(d).to_le_bytes());
    h.finalize()
}

impl DeltaLog {
    pub(crate) fn vv(&self) -> &VersionVector {
        &self.vv
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Encoded bytes of every entry held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// `author`'s entries with their encoded sizes, oldest first.
    pub(crate) fn entries_of(&self, author: &ActorId) -> Vec<(&SignedDelta, usize)> {
        self.authors.get(author).map_or_else(Vec::new, |run| {
            run.values().map(|l| (&l.delta, l.size)).collect()
        })
    }

    /// The join of every entry that lies wholly within `cut` (an entry reaching past its
    /// author's mark is left out, with the rest of that author's run).
    pub(crate) fn state_within(&self, cut: &VersionVector) -> crate::doc::Delta {
        let mut state = crate::doc::Delta::default();
        for (author, run) in &self.authors {
            let upto = cut.get(author);
            for l in run.values().take_while(|l| l.delta.seqs.last <= upto) {
                state.join_with(&l.delta.delta);
            }
        }
        state
    }

    /// Per author, its newest own dot in its entries that lie wholly within `cut` (as
    /// [`DeltaLog::state_within`] takes them).
    pub(crate) fn own_max_within(&self, cut: &VersionVector) -> BTreeMap<ActorId, u64> {
        let mut out = BTreeMap::new();
        for (author, run) in &self.authors {
            let upto = cut.get(author);
            let top = run
                .values()
                .take_while(|l| l.delta.seqs.last <= upto)
                .map(|l| l.delta.delta.ctx.max(author))
                .max();
            if let Some(top) = top {
                out.insert(*author, top);
            }
        }
        out
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
        let appended = covered.is_empty();
        for k in covered {
            if let Some(gone) = run.remove(&k) {
                self.bytes -= gone.size;
            }
            self.entries -= 1;
        }
        if appended {
            let next = chain_step(self.chains.get(&author), &delta);
            self.chains.insert(author, next);
        }
        let top = delta.delta.ctx.max(&author);
        let own = self.own.entry(author).or_insert(0);
        *own = (*own).max(top);
        if let Some(replaced) = run.insert(seqs.first, Logged { delta, size }) {
            self.entries -= 1;
            self.bytes -= replaced.size;
        }
        self.entries += 1;
        self.bytes += size;
        self.vv.advance(author, seqs.last);
        if !appended {
            self.rechain(&author);
        }
        true
    }

    /// Recomputes `author`'s chain and newest dot from its entries (after a fold or a cut).
    fn rechain(&mut self, author: &ActorId) {
        let Some(run) = self.authors.get(author) else {
            self.chains.remove(author);
            self.own.remove(author);
            return;
        };
        let mut h = None;
        let mut own = 0;
        for l in run.values() {
            h = Some(chain_step(h.as_ref(), &l.delta));
            own = own.max(l.delta.delta.ctx.max(author));
        }
        match h {
            Some(h) => self.chains.insert(*author, h),
            None => self.chains.remove(author),
        };
        self.own.insert(*author, own);
    }

    /// `author`'s newest dot in its own entries held here (0 if none).
    pub(crate) fn own_max(&self, author: &ActorId) -> u64 {
        self.own.get(author).copied().unwrap_or(0)
    }

    /// Every author's chain, shortened to 16 bytes, for summaries.
    pub(crate) fn chains(&self) -> Vec<(ActorId, [u8; 16])> {
        self.chains
            .iter()
            .map(|(a, h)| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&h.as_bytes()[..16]);
                (*a, b)
            })
            .collect()
    }

    /// `author`'s chain as [`DeltaLog::chains`] gives it.
    pub(crate) fn chain(&self, author: &ActorId) -> Option<[u8; 16]> {
        self.chains.get(author).map(|h| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&h.as_bytes()[..16]);
            b
        })
    }

    /// `author`'s newest [`MAX_LISTED`] entries as (range, fingerprint), oldest first.
    pub(crate) fn listing(&self, author: &ActorId) -> Vec<(SeqRange, u64)> {
        let Some(run) = self.authors.get(author) else {
            return Vec::new();
        };
        let skip = run.len().saturating_sub(MAX_LISTED);
        run.values()
            .skip(skip)
            .map(|l| (l.delta.seqs, fingerprint(&l.delta)))
            .collect()
    }

    /// `author`'s entries that a peer's `listing` lacks, oldest first, bounded like
    /// [`DeltaLog::missing_for`].
    pub(crate) fn unlisted(
        &self,
        author: &ActorId,
        listing: &[(SeqRange, u64)],
        max_count: usize,
        max_bytes: usize,
    ) -> Vec<SignedDelta> {
        let Some(run) = self.authors.get(author) else {
            return Vec::new();
        };
        let theirs: std::collections::BTreeSet<(SeqRange, u64)> =
            listing.iter().take(MAX_LISTED).copied().collect();
        // A listing covers the peer's newest entries only: compare from where it starts.
        let from = theirs.iter().map(|(r, _)| r.first).min().unwrap_or(0);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for l in run.values().filter(|l| l.delta.seqs.last >= from) {
            if theirs.contains(&(l.delta.seqs, fingerprint(&l.delta))) {
                continue;
            }
            if out.len() >= max_count || (!out.is_empty() && bytes + l.size > max_bytes) {
                break;
            }
            bytes += l.size;
            out.push(l.delta.clone());
        }
        out
    }

    /// True if `listing` (a peer's, of `author`) names an entry within what this replica
    /// holds of the author that it neither holds nor covers with a larger entry.
    pub(crate) fn lacks_listed(&self, author: &ActorId, listing: &[(SeqRange, u64)]) -> bool {
        let Some(run) = self.authors.get(author) else {
            return false;
        };
        let top = self.vv.get(author);
        listing.iter().take(MAX_LISTED).any(|(r, fp)| {
            if r.last > top {
                return false;
            }
            let holder = run.range(..=r.first).next_back().map(|(_, l)| l);
            !holder.is_some_and(|l| {
                let held = l.delta.seqs;
                (held == *r && fingerprint(&l.delta) == *fp) || (held != *r && held.covers(r))
            })
        })
    }

    /// How `delta` relates to the entries of its author held here, by sequence ranges
    /// alone (see [`Overlap`]).
    pub(crate) fn overlap(&self, delta: &SignedDelta) -> Overlap<'_> {
        let Some(run) = self.authors.get(&delta.author) else {
            return Overlap::New;
        };
        let seqs = delta.seqs;
        // Entries are contiguous and sorted: those overlapping start with the one holding
        // `first` (it may start earlier) and run to the last starting at or before `last`.
        let start = run
            .range(..=seqs.first)
            .next_back()
            .map_or(seqs.first, |(k, _)| *k);
        let mut covered = Vec::new();
        for (_, l) in run.range(start..=seqs.last) {
            let held = &l.delta;
            if held.seqs.last < seqs.first {
                continue;
            }
            if held.seqs == seqs {
                return if held.signature == delta.signature {
                    Overlap::Same
                } else if held.acl != delta.acl {
                    Overlap::Conflict(held)
                } else if resigned(&delta.delta, &held.delta)
                    && (delta.delta != held.delta || delta.signature < held.signature)
                {
                    // The author re-signed these writes leaving out values, and covering
                    // dots, dead everywhere (compaction): the thinner version replaces
                    // the other (of two equal ones, the lower signature, everywhere).
                    Overlap::Covers(vec![held])
                } else if resigned(&held.delta, &delta.delta) {
                    // The older version of what is held.
                    Overlap::Covered
                } else {
                    Overlap::Conflict(held)
                };
            }
            if held.seqs.covers(&seqs) {
                return Overlap::Covered;
            }
            if !seqs.covers(&held.seqs) {
                // Honest folds always nest: they cover aligned blocks of an author's
                // sequence numbers (see `replica/compact.rs`).
                return Overlap::Conflict(held);
            }
            covered.push(held);
        }
        if covered.is_empty() {
            Overlap::New
        } else {
            Overlap::Covers(covered)
        }
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
            if let Some(gone) = run.remove(k) {
                self.bytes -= gone.size;
            }
        }
        self.entries -= doomed.len();
        let top = run.values().next_back().map_or(0, |l| l.delta.seqs.last);
        if run.is_empty() {
            self.authors.remove(author);
        }
        self.vv.retreat(*author, top);
        self.rechain(author);
        !doomed.is_empty()
    }

    /// Every delta held.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &SignedDelta> {
        self.authors
            .values()
            .flat_map(|run| run.values().map(|l| &l.delta))
    }
}
