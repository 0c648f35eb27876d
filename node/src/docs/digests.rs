//! Finding which of the documents two peers share differ, in one small exchange when none
//! does, so that idle documents cost nothing per document.
//!
//! Each replica has a [`lattice_crdt::sync::Replica::state_digest`] (8 bytes over its
//! version vector and chains). A peer sends the [`total`] over the documents it shares with
//! the other; equal totals end the exchange. Otherwise the other answers with its digest
//! of each of [`BUCKETS`] buckets (documents by the first byte of their id), and the
//! requester asks for the documents of the buckets that differ, one digest each. A
//! document whose digests differ then gets an ordinary anti-entropy exchange.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use lattice_crdt::DocId;
use lattice_overlay::PeerId;

/// Buckets documents are spread over (by the first byte of their id).
pub const BUCKETS: usize = 64;
/// Most documents one listing carries (40 bytes each).
pub const MAX_LISTED: usize = 65_536;

/// Requests answered per peer per window: each costs a pass over every shared document.
/// An honest peer asks once per round of its peers, plus one follow-up.
pub const SERVE_WINDOW: Duration = Duration::from_secs(1);
pub const SERVE_BURST: u32 = 4;
/// Peers tracked at once; old windows are dropped first, and past this, strangers wait.
pub const SERVED_PEERS: usize = 4_096;

/// Which peers' requests to answer now: at most [`SERVE_BURST`] per [`SERVE_WINDOW`]
/// each, [`SERVED_PEERS`] peers at once.
#[derive(Debug, Default)]
pub struct ServeLimit {
    windows: HashMap<PeerId, (Instant, u32)>,
}

impl ServeLimit {
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        let fresh = |start: &Instant| now.duration_since(*start) < SERVE_WINDOW;
        if self.windows.len() >= SERVED_PEERS {
            self.windows.retain(|_, (start, _)| fresh(start));
        }
        let room = self.windows.len() < SERVED_PEERS;
        match self.windows.get_mut(&peer) {
            Some((start, n)) if fresh(start) => {
                *n += 1;
                *n <= SERVE_BURST
            }
            Some(window) => {
                *window = (now, 1);
                true
            }
            None if room => {
                self.windows.insert(peer, (now, 1));
                true
            }
            None => false,
        }
    }
}

/// Shared documents and their replicas' digests.
pub type Shared = BTreeMap<DocId, [u8; 8]>;

pub fn bucket(doc: &DocId) -> u8 {
    doc.0[0] % BUCKETS as u8
}

fn hash<'a>(docs: impl Iterator<Item = (&'a DocId, &'a [u8; 8])>) -> blake3::Hash {
    let mut h = blake3::Hasher::new_derive_key("lattice shared documents v1");
    for (doc, digest) in docs {
        h.update(&doc.0);
        h.update(digest);
    }
    h.finalize()
}

/// The digest of every shared document together.
pub fn total(shared: &Shared) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash(shared.iter()).as_bytes()[..16]);
    out
}

/// Each bucket's digest, 8 bytes each, [`BUCKETS`] in all.
pub fn buckets(shared: &Shared) -> Vec<u8> {
    let mut out = Vec::with_capacity(BUCKETS * 8);
    for b in 0..BUCKETS as u8 {
        let h = hash(shared.iter().filter(|(d, _)| bucket(d) == b));
        out.extend_from_slice(&h.as_bytes()[..8]);
    }
    out
}

/// The buckets whose digests differ; `None` if `theirs` is not a list of buckets.
pub fn differing_buckets(shared: &Shared, theirs: &[u8]) -> Option<Vec<u8>> {
    if theirs.len() != BUCKETS * 8 {
        return None;
    }
    let ours = buckets(shared);
    Some(
        (0..BUCKETS)
            .filter(|&b| ours[b * 8..b * 8 + 8] != theirs[b * 8..b * 8 + 8])
            .map(|b| b as u8)
            .collect(),
    )
}

/// Document ids and digests (40 bytes each) of the shared documents in `wanted` buckets,
/// at most [`MAX_LISTED`].
pub fn listing(shared: &Shared, wanted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (doc, digest) in shared
        .iter()
        .filter(|(d, _)| wanted.contains(&bucket(d)))
        .take(MAX_LISTED)
    {
        out.extend_from_slice(&doc.0);
        out.extend_from_slice(digest);
    }
    out
}

/// The shared documents listed in `theirs` with another digest than ours; `None` if
/// `theirs` is not a listing. Documents only one side counts as shared are left out.
pub fn differing_docs(shared: &Shared, theirs: &[u8]) -> Option<Vec<DocId>> {
    if theirs.len() % 40 != 0 || theirs.len() / 40 > MAX_LISTED {
        return None;
    }
    let mut out = Vec::new();
    for entry in theirs.chunks_exact(40) {
        let doc = DocId(entry[..32].try_into().ok()?);
        if shared.get(&doc).is_some_and(|ours| ours[..] != entry[32..]) {
            out.push(doc);
        }
    }
    Some(out)
}

/// The documents of `theirs` (as [`differing_docs`] reads it) whose digest equals ours.
pub fn same_docs(shared: &Shared, theirs: &[u8]) -> Vec<DocId> {
    theirs
        .chunks_exact(40)
        .take(MAX_LISTED)
        .filter_map(|entry| {
            let doc = DocId(entry[..32].try_into().ok()?);
            shared
                .get(&doc)
                .is_some_and(|ours| ours[..] == entry[32..])
                .then_some(doc)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(n: u8) -> Shared {
        (0..n).map(|i| (DocId([i; 32]), [i; 8])).collect()
    }

    #[test]
    fn equal_sets_agree_at_once_and_one_change_is_found_in_its_bucket() {
        let ours = docs(200);
        assert_eq!(total(&ours), total(&docs(200)));
        let mut theirs = docs(200);
        theirs.insert(DocId([77; 32]), [0; 8]);
        assert_ne!(total(&ours), total(&theirs));
        let wanted = differing_buckets(&ours, &buckets(&theirs)).unwrap();
        assert_eq!(wanted, vec![bucket(&DocId([77; 32]))]);
        let list = listing(&theirs, &wanted);
        assert_eq!(list.len(), 40 * 3, "three documents share that bucket");
        assert_eq!(differing_docs(&ours, &list).unwrap(), vec![DocId([77; 32])]);
    }

    #[test]
    fn a_peer_is_answered_a_few_times_a_second_and_strangers_cannot_crowd_out_the_rest() {
        let t0 = Instant::now();
        let mut limit = ServeLimit::default();
        let peer = PeerId::random();
        for _ in 0..SERVE_BURST {
            assert!(limit.allow(peer, t0));
        }
        assert!(!limit.allow(peer, t0), "over the burst");
        assert!(limit.allow(peer, t0 + SERVE_WINDOW), "a new window");
        // A flood of strangers fills the table; within the window nobody new gets in,
        // and once it has passed their entries make room again.
        for _ in 0..SERVED_PEERS {
            limit.allow(PeerId::random(), t0 + SERVE_WINDOW);
        }
        assert!(!limit.allow(PeerId::random(), t0 + SERVE_WINDOW));
        assert!(limit.allow(PeerId::random(), t0 + SERVE_WINDOW * 3));
        assert!(limit.windows.len() <= SERVED_PEERS);
    }

    #[test]
    fn documents_only_one_side_shares_are_left_out_and_garbage_is_refused() {
        let ours = docs(10);
        let mut theirs = docs(10);
        theirs.insert(DocId([200; 32]), [1; 8]);
        let list = listing(&theirs, &(0..BUCKETS as u8).collect::<Vec<_>>());
        assert_eq!(differing_docs(&ours, &list).unwrap(), Vec::<DocId>::new());
        assert_eq!(differing_docs(&ours, &[0; 39]), None);
        assert_eq!(differing_buckets(&ours, &[0; 8]), None);
    }
}
