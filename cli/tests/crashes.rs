//! Power cuts, as a user of `lattice testnet` makes them (issue #11): node 1 is killed
//! (SIGKILL) at a random moment while it fetches a blob and writes to a document, and
//! restarted, 200 times. Every write it acknowledged must still be there after each
//! restart, every blob it holds complete must hash to its name, and every restart must
//! work.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::testnet::Net;
use serde_json::Value;

/// Cycles run by `cargo test`; `LATTICE_KILL_CYCLES` changes it.
const CYCLES: u64 = 200;
/// Size of the blob fetched in each cycle.
const BLOB: usize = 8 << 20;
/// Longest time a cycle runs before its kill.
const MAX_DELAY_MS: u64 = 700;

/// What the cycles saw.
#[derive(Debug, Default)]
struct Tally {
    acked: u64,
    /// Writes not acknowledged: cut off by the kill (their outcome is unknown) or refused
    /// while the node was down.
    unacked: u64,
    /// Of those, found applied after the restart.
    unacked_kept: u64,
    lost: u64,
    fetched_whole: u64,
    killed_mid_fetch: u64,
    corrupt: u64,
    restart_failures: u64,
}

/// A value of the pseudo-random sequence the kill times come from (xorshift64*).
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn exec(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .arg("testnet")
        .arg("--dir")
        .arg(dir)
        .args(["exec", "1", "--"])
        .args(args)
        .output()
        .expect("lattice runs")
}

fn hits(net: &Net, doc: &str) -> u64 {
    net.exec_json(1, &["doc", "get", doc, "hits", "--json"])
        .as_u64()
        .expect("a count")
}

#[test]
fn kill_9_during_fetches_and_writes_loses_nothing_acknowledged() {
    let cycles = std::env::var("LATTICE_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CYCLES);
    let net = Net::new();
    net.json(&["up", "-n", "2"]);
    let doc = net.exec_json(0, &["doc", "create", "crashes", "--open", "--json"])["doc"]
        .as_str()
        .unwrap()
        .to_owned();
    net.exec_json(1, &["doc", "join", &doc, "--json"]);
    net.exec_json(1, &["doc", "incr", &doc, "hits", "1", "--json"]);
    let src = net.dir.with_file_name("blob.bin");
    let mut bytes = vec![0u8; BLOB];
    blake3::Hasher::new()
        .update(b"crashes")
        .finalize_xof()
        .fill(&mut bytes);
    std::fs::write(&src, &bytes).unwrap();
    let hash = net.exec_json(0, &["blob", "add", src.to_str().unwrap(), "--json"])["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = net.dir.with_file_name("out.bin");
    let out_arg = out.to_str().unwrap().to_owned();

    let mut t = Tally::default();
    let mut value = hits(&net, &doc);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let started = Instant::now();
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, dir, doc) = (stop.clone(), net.dir.clone(), doc.clone());
            std::thread::spawn(move || {
                let (mut acked, mut tried) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    tried += 1;
                    if exec(&dir, &["doc", "incr", &doc, "hits", "1"])
                        .status
                        .success()
                    {
                        acked += 1;
                    }
                }
                (acked, tried)
            })
        };
        let fetch = {
            let (dir, hash) = (net.dir.clone(), hash.clone());
            std::thread::spawn(move || exec(&dir, &["blob", "get", &hash]).status.success())
        };
        // The moment of the power cut, anywhere in the fetch and the writes.
        std::thread::sleep(Duration::from_millis(next(&mut rng) % MAX_DELAY_MS));
        let killed = net.run(&["kill", "1"]);
        assert!(
            killed.status.success(),
            "cycle {cycle}: kill: {}",
            String::from_utf8_lossy(&killed.stderr)
        );
        stop.store(true, Ordering::Relaxed);
        let (acked, tried) = writer.join().unwrap();
        let fetched = fetch.join().unwrap();

        let restarted = net.run(&["restart", "1"]);
        if !restarted.status.success() {
            t.restart_failures += 1;
            eprintln!(
                "cycle {cycle}: restart failed: {}",
                String::from_utf8_lossy(&restarted.stderr)
            );
            net.run_json(&["restart", "1", "--json"]);
        }
        // Every acknowledged increment is there; of the ones cut off, any may be.
        let now = hits(&net, &doc);
        t.acked += acked;
        t.unacked += tried - acked;
        t.lost += (value + acked).saturating_sub(now);
        t.unacked_kept += now.saturating_sub(value + acked);
        assert!(
            now >= value + acked && now <= value + tried,
            "cycle {cycle}: count {now}, expected {} acknowledged ({} tried): {t:?}",
            value + acked,
            value + tried
        );
        value = now;

        // A blob held whole is the blob: copied out, it hashes to its name. Then it goes,
        // so that the next cycle fetches it again; a partial one resumes.
        let listed = net.exec_json(1, &["blob", "ls", "--json"]);
        let whole = listed
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["hash"] == hash.as_str() && b["complete"] == Value::Bool(true));
        if whole {
            let got = exec(&net.dir, &["blob", "get", &hash, "-o", &out_arg]);
            let intact = got.status.success()
                && std::fs::read(&out).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == hash);
            if !intact {
                t.corrupt += 1;
            }
            assert!(
                intact,
                "cycle {cycle}: blob held whole does not verify: {}",
                String::from_utf8_lossy(&got.stderr)
            );
            t.fetched_whole += 1;
            net.exec_json(1, &["blob", "rm", &hash, "--json"]);
        } else if !fetched {
            t.killed_mid_fetch += 1;
        }
    }
    // Node 0 ends up with the same count: what node 1 kept reached its replica.
    net.json(&["wait-converged", &doc, "--timeout", "120"]);
    let there = net.exec_json(0, &["doc", "get", &doc, "hits", "--json"]);
    assert_eq!(there.as_u64(), Some(value));
    let secs = started.elapsed().as_secs_f64();
    println!("{cycles} kill -9 cycles in {secs:.0} s: {t:?}");
    assert_eq!((t.lost, t.corrupt, t.restart_failures), (0, 0, 0));
    // The kills really fell in the middle of fetches and writes.
    assert!(t.killed_mid_fetch > 0, "{t:?}");
    assert!(t.acked > cycles, "{t:?}");
}
