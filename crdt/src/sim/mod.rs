//! A deterministic network simulator for the [`crate::sync`] protocol.
//!
//! Many [`Replica`]s of one document run in one process over a virtual network with a
//! seeded RNG and virtual time: message loss, duplication and reordering (random
//! latency), partitions that later heal, and crashes that lose everything not yet on the
//! simulated disk. The same [`SimConfig`] always gives the same [`Report`], byte for byte,
//! so a failing seed replays exactly.
//!
//! Writes are checked Jepsen-style: every acknowledged write must be in the final state
//! of every replica, and nothing unacknowledged may appear.
//!
//! - [`driver`]: the event loop: virtual time, disks, crashes, message delivery.
//! - [`net`]: the virtual network (topology, partitions).
//! - [`workload`]: the random writes and the model of what acknowledged writes imply.

mod byzantine;
mod driver;
mod net;
mod workload;

use serde::Serialize;

use crate::sync::Config;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a delivered message is delivered twice.
    pub dup: f64,
    /// Partitions (each splits the nodes in two, then heals) during the write phase.
    pub partitions: usize,
    /// Crashes (each loses un-persisted state, then restarts) during the write phase.
    pub crashes: usize,
    /// Writes attempted across all nodes during the write phase.
    pub writes: usize,
    /// Neighbours per node (the overlay's connection degree).
    pub degree: usize,
    pub write_phase_ms: u64,
    /// Each disk write completes within 1..=this many milliseconds (in order); a crash
    /// loses what has not completed.
    pub disk_latency_ms: u64,
    /// After the last heal and restart, how long to wait for convergence before giving up.
    pub settle_limit_ms: u64,
    /// Encode every message to count bytes (slower).
    pub measure_bytes: bool,
    /// Byzantine authors: writers that sign hostile deltas (see `byzantine.rs`).
    pub byzantine: usize,
    /// Hostile deltas they inject into honest replicas during the write phase.
    pub attacks: usize,
    /// Probability that a disk commit fails (nothing of it is stored; the replica is told).
    pub disk_failures: f64,
    /// Each replica compacts this often (`None`: never), after saving what its peers hold
    /// to its disk, as the daemon does.
    pub compact_every_ms: Option<u64>,
    /// Node 0 goes down a quarter into the write phase for this long (0: never), and comes
    /// back with its disk: with a compaction horizon shorter than this, the others stop
    /// waiting for it and it catches up from their folds.
    pub away_ms: u64,
    /// Once converged, keep running this long (compaction goes on) before the final
    /// checks, which must still find every replica in agreement.
    pub linger_ms: u64,
    pub replica: Config,
}

impl SimConfig {
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            loss: 0.05,
            dup: 0.02,
            partitions: 2,
            crashes: 3,
            writes: 150,
            degree: 6,
            write_phase_ms: 15_000,
            disk_latency_ms: 20,
            settle_limit_ms: 300_000,
            measure_bytes: false,
            byzantine: 0,
            attacks: 0,
            disk_failures: 0.0,
            compact_every_ms: Some(1_000),
            away_ms: 0,
            linger_ms: 0,
            replica: Config {
                anti_entropy_interval_ms: 2_000,
                // Virtual runs last minutes: a horizon of seconds lets partitioned and
                // crashed replicas fall out of the stable cut and come back.
                compaction_horizon_ms: 5_000,
                ..Config::default()
            },
        }
    }
}

/// The outcome of one simulation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub seed: u64,
    pub converged: bool,
    /// Virtual milliseconds from the last heal (or restart) until every replica held the
    /// same state; `None` if they never did within the limit.
    pub converge_ms: Option<u64>,
    pub writes_attempted: u64,
    pub writes_acknowledged: u64,
    /// Acknowledged writes missing from some replica's final state (must be 0).
    pub acknowledged_lost: u64,
    /// Replicas whose final state disagrees with the model of acknowledged writes.
    pub model_mismatches: Vec<String>,
    pub messages_sent: u64,
    pub messages_lost: u64,
    pub bytes_sent: Option<u64>,
    pub deltas_rejected: u64,
    /// Hostile deltas injected by Byzantine authors.
    pub attacks: usize,
    /// Byzantine authors caught equivocating, summed over replicas.
    pub equivocations: u64,
    /// Disk commits that failed.
    pub disk_failures: u64,
    /// Folds made by compaction and persisted, summed over replicas.
    pub folds: u64,
    /// Bytes of the largest replica's log at the end, against the acknowledged writes'
    /// own deltas (what every log would hold without compaction).
    pub log_bytes: u64,
    pub uncompacted_bytes: u64,
    /// Bytes of the final state (encoded), what no log can do without.
    pub state_bytes: u64,
    /// The final state differs from the join of every acknowledged write's original
    /// delta: compaction changed what the document says (must be false; not checked
    /// with Byzantine authors, whose cut writes leave the state).
    pub compaction_changed_state: bool,
    pub crashes: usize,
    pub partitions: usize,
    pub virtual_ms: u64,
    /// Digest of the final state (hex) if all replicas agree.
    pub digest: Option<String>,
}

impl Report {
    /// True if the run met every guarantee: convergence, and no acknowledged write lost.
    pub fn ok(&self) -> bool {
        self.converged
            && self.acknowledged_lost == 0
            && self.model_mismatches.is_empty()
            && !self.compaction_changed_state
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "nodes               {}", self.nodes)?;
        writeln!(f, "seed                {}", self.seed)?;
        writeln!(f, "converged           {}", self.converged)?;
        match self.converge_ms {
            Some(ms) => writeln!(
                f,
                "converge time       {ms} ms (virtual, after the last heal)"
            )?,
            None => writeln!(f, "converge time       never")?,
        }
        writeln!(
            f,
            "writes              {} attempted, {} acknowledged",
            self.writes_attempted, self.writes_acknowledged
        )?;
        writeln!(f, "acknowledged lost   {}", self.acknowledged_lost)?;
        for m in &self.model_mismatches {
            writeln!(f, "  mismatch: {m}")?;
        }
        writeln!(
            f,
            "messages            {} sent, {} lost",
            self.messages_sent, self.messages_lost
        )?;
        if let Some(b) = self.bytes_sent {
            writeln!(f, "bytes sent          {b}")?;
        }
        writeln!(f, "deltas rejected     {}", self.deltas_rejected)?;
        if self.disk_failures > 0 {
            writeln!(f, "disk failures       {}", self.disk_failures)?;
        }
        writeln!(
            f,
            "compaction          {} folds, largest log {} bytes (uncompacted {}, state {}){}",
            self.folds,
            self.log_bytes,
            self.uncompacted_bytes,
            self.state_bytes,
            if self.compaction_changed_state {
                ", CHANGED THE STATE"
            } else {
                ""
            }
        )?;
        if self.attacks > 0 {
            writeln!(
                f,
                "byzantine           {} attacks, {} equivocations caught",
                self.attacks, self.equivocations
            )?;
        }
        writeln!(
            f,
            "faults              {} partitions, {} crashes",
            self.partitions, self.crashes
        )?;
        writeln!(f, "virtual time        {} ms", self.virtual_ms)?;
        write!(
            f,
            "digest              {}",
            self.digest.as_deref().unwrap_or("(replicas differ)")
        )
    }
}

/// Runs one simulation to completion.
pub fn run(cfg: &SimConfig) -> Report {
    driver::Sim::new(cfg).run()
}
