//! The simulated disks: commits that complete in order, may fail, and are lost to crashes.

use std::collections::BTreeMap;

use rand::Rng;

use super::Sim;
use crate::id::ActorId;
use crate::sync::{Input, SignedDelta};

impl Sim<'_> {
    /// A node's disk finished the writes up to `ticket` (unless it crashed since, which
    /// bumped its epoch) — or, with probability `disk_failures`, failed them.
    pub(super) fn persist_done(&mut self, node: usize, epoch: u64, ticket: u64) {
        let n = &mut self.nodes[node];
        if n.epoch != epoch {
            return;
        }
        let done = n.writing.iter().take_while(|(t, _)| *t <= ticket).count();
        if done > 0 && self.cfg.disk_failures > 0.0 && self.rng.random_bool(self.cfg.disk_failures)
        {
            // The commit fails: nothing of this batch reaches the disk, and (as the daemon
            // does) every client still waiting on this node is told its write failed.
            n.writing.drain(..done);
            self.report.disk_failures += 1;
            for (_, w) in std::mem::take(&mut n.in_flight) {
                self.model.refuse(&w);
            }
            self.input(node, Input::PersistFailed);
            return;
        }
        for (_, d) in n.writing.drain(..done) {
            store(&mut n.disk, d);
        }
        self.input(node, Input::Persisted { ticket });
    }
}

/// Stores a delta on a simulated disk; it replaces the deltas of its author it covers.
fn store(disk: &mut BTreeMap<(ActorId, u64), SignedDelta>, d: SignedDelta) {
    let covered: Vec<_> = disk
        .range((d.author, d.seqs.first)..=(d.author, d.seqs.last))
        .filter(|(_, old)| d.seqs.covers(&old.seqs))
        .map(|(k, _)| *k)
        .collect();
    for k in covered {
        disk.remove(&k);
    }
    disk.insert((d.author, d.seqs.first), d);
}
