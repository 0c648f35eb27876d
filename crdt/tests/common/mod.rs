//! Shared by the simulation tests: the seed to replay, and the failure message that says
//! how to replay it.

use lattice_crdt::sim::Report;

/// `LATTICE_SIM_SEED`, or 0.
pub fn env_seed() -> u64 {
    std::env::var("LATTICE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Fails unless the run met every guarantee, printing the report and how to replay it
/// (`replay`: the environment to set before `cargo test … replay`).
pub fn assert_ok(r: &Report, what: &str, replay: &str) {
    assert!(r.ok(), "{what} failed; replay with {replay}\n{r}");
}
