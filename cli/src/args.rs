//! The command line, as clap parses it. The surface follows DESIGN.md's CLI contract.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "lattice",
    version,
    about = "A peer-to-peer overlay node: DHT, shared resources, replicated CRDT documents"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted anywhere on the line.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// The daemon's control socket.
    #[arg(long, global = true, env = "LATTICE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Local testnets and the deterministic simulator.
    #[command(subcommand)]
    Testnet(TestnetCommand),
}

#[derive(Subcommand, Debug)]
pub enum TestnetCommand {
    /// Simulate N replicas of one document in this process, deterministically: message
    /// loss, duplication, partitions and crashes. Exits non-zero unless every replica
    /// converged and no acknowledged write was lost.
    Sim(SimArgs),
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Number of virtual replicas.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// RNG seed: the same seed gives the same report, byte for byte.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.05)]
    pub loss: f64,
    /// Probability that a message is delivered twice.
    #[arg(long, default_value_t = 0.02)]
    pub dup: f64,
    /// Network partitions during the write phase (each heals).
    #[arg(long, default_value_t = 2)]
    pub partitions: usize,
    /// Replica crashes during the write phase (each loses un-persisted state).
    #[arg(long, default_value_t = 3)]
    pub crashes: usize,
    /// Writes across all replicas.
    #[arg(long, default_value_t = 150)]
    pub writes: usize,
}
