//! Simulations with failing disks (issue #11): commits fail at random, besides crashes that
//! lose what was not yet on disk, partitions and a lossy network. A failed commit's writes
//! are refused to their clients and undone. Every run must converge, keep every
//! acknowledged write, and show no write whose client was told it failed.
//!
//! Replay a failing seed with
//! `LATTICE_SIM_SEED=<seed> cargo test -p lattice-crdt --test storage_faults replay -- --nocapture`.

mod common;

use lattice_crdt::sim::{run, Report, SimConfig};

fn config(seed: u64) -> SimConfig {
    let mut c = SimConfig::new(10, seed);
    c.writes = 80;
    c.degree = 4;
    c.partitions = 1;
    c.crashes = 3;
    c.write_phase_ms = 8_000;
    c.disk_failures = 0.1;
    c
}

fn check(seed: u64) -> Report {
    let r = run(&config(seed));
    common::assert_ok(
        &r,
        "storage-fault simulation",
        &format!("LATTICE_SIM_SEED={seed}"),
    );
    r
}

fn sweep(seeds: std::ops::Range<u64>) {
    let (mut failures, mut refused) = (0, 0);
    for seed in seeds {
        let r = check(seed);
        failures += r.disk_failures;
        refused += r.writes_attempted - r.writes_acknowledged;
    }
    // The disks must actually fail under writes, or this proves little.
    assert!(failures > 0 && refused > 0, "{failures} {refused}");
}

// 1,000 seeds, split so the harness runs them on every core.
#[test]
fn disk_fault_seeds_0_to_500() {
    sweep(0..500);
}

#[test]
fn disk_fault_seeds_500_to_1000() {
    sweep(500..1_000);
}

#[test]
fn replay() {
    let seed = common::env_seed();
    println!("{}", check(seed));
}
