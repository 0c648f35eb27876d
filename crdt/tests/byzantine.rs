//! Simulations with Byzantine authors: writers with valid keys that sign hostile deltas
//! (the same dot under two keys, contexts claiming a million unseen dots of an honest
//! writer, sequence ranges reaching `u64::MAX`, two versions of one write sent to two
//! replicas, reused dots, bad signatures) mixed into honest traffic on a lossy network
//! with partitions and crashes. Every run must converge on one digest and keep every
//! acknowledged honest write.
//!
//! Replay a failing seed with
//! `LATTICE_SIM_SEED=<seed> cargo test -p lattice-crdt --test byzantine replay -- --nocapture`.

mod common;

use lattice_crdt::sim::{run, Report, SimConfig};

fn config(seed: u64) -> SimConfig {
    let mut c = SimConfig::new(12, seed);
    c.writes = 80;
    c.degree = 4;
    c.partitions = 1;
    c.crashes = 2;
    c.write_phase_ms = 8_000;
    c.byzantine = 3;
    c.attacks = 40;
    c
}

fn check(seed: u64) -> Report {
    let r = run(&config(seed));
    common::assert_ok(
        &r,
        "byzantine simulation",
        &format!("LATTICE_SIM_SEED={seed}"),
    );
    assert!(
        r.writes_acknowledged > 0,
        "seed {seed}: nothing acknowledged\n{r}"
    );
    r
}

fn sweep(seeds: std::ops::Range<u64>) {
    let (mut attacks, mut rejected, mut caught) = (0, 0, 0);
    for seed in seeds {
        let r = check(seed);
        attacks += r.attacks;
        rejected += r.deltas_rejected;
        caught += r.equivocations;
    }
    // The attacks must actually happen and be refused or caught, or this proves little.
    assert!(
        attacks > 0 && rejected > 0 && caught > 0,
        "{attacks} {rejected} {caught}"
    );
}

// 1,000 adversarial seeds, split so the harness runs them on every core.
#[test]
fn byzantine_seeds_0_to_250() {
    sweep(0..250);
}

#[test]
fn byzantine_seeds_250_to_500() {
    sweep(250..500);
}

#[test]
fn byzantine_seeds_500_to_750() {
    sweep(500..750);
}

#[test]
fn byzantine_seeds_750_to_1000() {
    sweep(750..1_000);
}

#[test]
fn replay() {
    let seed = common::env_seed();
    println!("{}", check(seed));
}
