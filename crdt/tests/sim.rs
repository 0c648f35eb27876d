//! Deterministic simulations of the sync protocol: 100 replicas on a lossy, duplicating,
//! reordering network, with partitions that heal and crashes that lose un-persisted
//! state. Every run must converge and keep every acknowledged write.
//!
//! A failure prints its seed. Replay one (with the same fault mix) with
//! `LATTICE_SIM_SEED=<seed> LATTICE_SIM_MIX=<mix> cargo test -p lattice-crdt --test sim replay -- --nocapture`.

mod common;

use lattice_crdt::sim::{run, Report, SimConfig};

const NODES: usize = 100;

/// The fault mixes the seeds are spread over.
fn config(mix: &str, seed: u64) -> SimConfig {
    let mut c = SimConfig::new(NODES, seed);
    match mix {
        // The defaults: 5% loss, 2% duplication, 2 partitions, 3 crashes.
        "default" => {}
        // A hostile network: heavy loss and duplication, many partitions and crashes.
        "harsh" => {
            c.loss = 0.3;
            c.dup = 0.2;
            c.partitions = 4;
            c.crashes = 12;
        }
        // Slow disks: writes linger un-persisted, so crashes lose more of them.
        "slow-disk" => {
            c.disk_latency_ms = 400;
            c.crashes = 15;
        }
        // One replica away for 30 s against a compaction horizon of 5 s: the others stop
        // waiting for it, and it comes back to their folds.
        "away" => {
            c.away_ms = 30_000;
        }
        other => panic!("unknown mix {other}"),
    }
    c
}

fn check(mix: &str, seed: u64) -> Report {
    let report = run(&config(mix, seed));
    common::assert_ok(
        &report,
        "simulation",
        &format!("LATTICE_SIM_SEED={seed} LATTICE_SIM_MIX={mix}"),
    );
    assert!(
        report.writes_acknowledged > 0,
        "seed {seed} ({mix}): no write was acknowledged\n{report}"
    );
    report
}

fn sweep(mix: &str, seeds: std::ops::Range<u64>) {
    let mut lost_unacked = 0;
    for seed in seeds {
        let r = check(mix, seed);
        lost_unacked += r.writes_attempted - r.writes_acknowledged;
    }
    // The crash bursts must actually catch writes in flight, or the test proves little.
    if mix == "slow-disk" {
        assert!(
            lost_unacked > 0,
            "no crash ever caught an unacknowledged write"
        );
    }
}

// 320 seeds in all, split so the test harness can run them on every core.
#[test]
fn default_mix_seeds_0_to_80() {
    sweep("default", 0..80);
}

#[test]
fn default_mix_seeds_80_to_160() {
    sweep("default", 80..160);
}

#[test]
fn harsh_mix_seeds_0_to_80() {
    sweep("harsh", 0..80);
}

#[test]
fn slow_disk_mix_seeds_0_to_80() {
    sweep("slow-disk", 0..80);
}

#[test]
fn away_mix_seeds_0_to_40() {
    sweep("away", 0..40);
}

/// Compaction under the default mix changes nothing a reader can see (the run compares
/// the final state with the join of every acknowledged write's own delta), and the logs
/// end within twice the state plus 4 KiB per author, where without it they keep every
/// write.
#[test]
fn compaction_shrinks_the_logs_and_leaves_the_state_as_it_would_be_without() {
    for seed in 0..5 {
        let mut c = config("default", seed);
        c.nodes = 10;
        c.degree = 4;
        c.writes = 3_000;
        c.linger_ms = 20_000;
        let with = run(&c);
        common::assert_ok(&with, "simulation", &format!("seed {seed}"));
        // Each author keeps one fold per aligned block (a few per author) of a few
        // hundred bytes of signature, ranges and context.
        let bound = 2 * with.state_bytes + 4_096 * c.nodes as u64;
        assert!(with.log_bytes <= bound, "{with}");
        c.compact_every_ms = None;
        let without = run(&c);
        common::assert_ok(&without, "simulation", &format!("seed {seed}"));
        assert_eq!(without.folds, 0);
        assert!(without.log_bytes > 2 * with.log_bytes, "{with}\n{without}");
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let a = run(&config("harsh", 7));
    let b = run(&config("harsh", 7));
    assert_eq!(a, b);
    assert_eq!(a.to_string(), b.to_string());
    let c = run(&config("harsh", 8));
    assert_ne!(
        a.digest, c.digest,
        "different seeds should write different data"
    );
}

#[test]
fn a_network_that_drops_everything_never_converges_and_says_so() {
    let mut c = config("default", 3);
    c.loss = 1.0;
    c.settle_limit_ms = 5_000;
    let r = run(&c);
    assert!(!r.converged);
    assert!(!r.ok());
    assert_eq!(r.converge_ms, None);
}

/// Replays one seed from the environment (seed 0 of the default mix if unset).
#[test]
fn replay() {
    let seed = common::env_seed();
    let mix = std::env::var("LATTICE_SIM_MIX").unwrap_or_else(|_| "default".into());
    let r = check(&mix, seed);
    println!("{r}");
}
