//! `lattice testnet sim`: checks user input and runs [`lattice_crdt::sim`].

use anyhow::{ensure, Result};
pub use lattice_crdt::sim::{Report, SimConfig};

/// What a user may choose for a simulation; everything else keeps the simulator's defaults.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub nodes: usize,
    pub seed: u64,
    pub loss: f64,
    pub dup: f64,
    pub partitions: usize,
    pub crashes: usize,
    pub writes: usize,
    pub compaction: bool,
    /// Virtual seconds replica 0 is away (0: never).
    pub away_secs: u64,
}

/// Largest simulation accepted: each virtual replica costs a few kilobytes plus its data.
pub const MAX_NODES: usize = 1_000_000;

impl SimOptions {
    /// Checks the options and builds the simulator's configuration.
    pub fn config(&self) -> Result<SimConfig> {
        ensure!(
            (1..=MAX_NODES).contains(&self.nodes),
            "--nodes must be between 1 and {MAX_NODES}, not {}",
            self.nodes
        );
        for (name, p) in [("--loss", self.loss), ("--dup", self.dup)] {
            ensure!(
                (0.0..=1.0).contains(&p),
                "{name} is a probability between 0 and 1, not {p}"
            );
        }
        let mut cfg = SimConfig::new(self.nodes, self.seed);
        cfg.loss = self.loss;
        cfg.dup = self.dup;
        cfg.partitions = self.partitions;
        cfg.crashes = self.crashes;
        cfg.writes = self.writes;
        cfg.measure_bytes = true;
        if !self.compaction {
            cfg.compact_every_ms = None;
        }
        cfg.away_ms = self.away_secs.saturating_mul(1_000).min(24 * 3_600_000);
        Ok(cfg)
    }

    /// Runs the simulation.
    pub fn run(&self) -> Result<Report> {
        Ok(lattice_crdt::sim::run(&self.config()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SimOptions {
        SimOptions {
            nodes: 20,
            seed: 5,
            loss: 0.1,
            dup: 0.05,
            partitions: 1,
            crashes: 2,
            writes: 50,
            compaction: true,
            away_secs: 0,
        }
    }

    #[test]
    fn bad_options_are_refused_with_the_flag_named() {
        let mut o = opts();
        o.loss = 1.5;
        assert!(o.config().unwrap_err().to_string().contains("--loss"));
        let mut o = opts();
        o.nodes = 0;
        assert!(o.config().unwrap_err().to_string().contains("--nodes"));
    }

    #[test]
    fn a_run_converges_and_counts_bytes() {
        let r = opts().run().unwrap();
        assert!(r.ok(), "{r}");
        assert!(r.bytes_sent.unwrap_or(0) > 0);
    }
}
