//! Seeing what the network does (issue #16), end to end with real daemons on 127.0.0.1:
//! trace ids followed through a testnet's logs, sync lag in `doc info` and
//! `testnet wait-converged`.

mod common;

use common::testnet::Net;
use common::{EVERY, WAIT};
use lattice_testnet::daemon::wait_for;
use std::time::Duration;

/// The lines of `testnet logs --trace ID`.
fn traced(net: &Net, id: &str) -> Vec<String> {
    let out = net.run(&["logs", "--trace", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_write_and_a_fetch_can_be_followed_through_the_network_and_lag_is_measured() {
    let net = Net::new();
    net.json(&["up", "-n", "3"]);
    let doc = net.exec_json(0, &["doc", "create", "watched", "--open", "--json"])["doc"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..3 {
        net.exec_json(i, &["doc", "join", &doc, "--json"]);
    }

    // The writer is told the write's trace id.
    let w = net.exec_json(1, &["doc", "set", &doc, "colour", "green", "--json"]);
    let trace = w["trace"].as_str().unwrap().to_owned();
    assert_eq!(trace.len(), 16, "{w}");
    let c = net.run_json(&["wait-converged", &doc, "--timeout", "60"]);
    assert_eq!(c["nodes"], 3, "{c}");
    let slowest = c["slowest_lag_ms"].as_u64().expect("a slowest lag");
    assert!(slowest < 60_000, "{c}");
    assert!(c["slowest_node"].as_u64().is_some_and(|n| n != 1), "{c}");

    // Its path: written on node 1, then applied on nodes 0 and 2, in time order.
    let lines = wait_for("the write in every node's log", WAIT, EVERY, || {
        let lines = traced(&net, &trace);
        let on = |node: usize, what: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(&format!("[{node}] ")) && l.contains(what))
        };
        Ok(
            match (on(1, "written here"), on(0, "applied"), on(2, "applied")) {
                (Some(w), Some(a), Some(b)) => Some((lines.clone(), w, a, b)),
                _ => None,
            },
        )
    })
    .unwrap();
    let (lines, written, a, b) = lines;
    assert!(written < a && written < b, "{lines:#?}");
    assert!(lines.iter().all(|l| l.contains(&trace)), "{lines:#?}");
    // Another id names nothing.
    assert!(traced(&net, "0123456789abcdef").is_empty());

    // A replica's info shows the lag of the write it received, and nothing missing.
    let info = net.exec_json(0, &["doc", "info", &doc, "--json"]);
    assert!(
        info["lag"]["samples"].as_u64().is_some_and(|n| n >= 1),
        "{info}"
    );
    assert!(info["lag"]["max_ms"].as_u64().is_some(), "{info}");
    assert_eq!(info["behind"], 0, "{info}");

    // A blob fetch: the fetcher is told its trace id, and the provider logs it.
    let file = net.dir.join("traced-blob");
    std::fs::write(&file, vec![7u8; 300_000]).unwrap();
    let added = net.exec_json(0, &["blob", "add", file.to_str().unwrap(), "--json"]);
    let hash = added["hash"].as_str().unwrap().to_owned();
    let out = net.dir.join("traced-blob.out");
    let got = net.exec_json(
        2,
        &["blob", "get", &hash, "-o", out.to_str().unwrap(), "--json"],
    );
    let fetch = got["done"]["trace"].as_str().unwrap().to_owned();
    assert_eq!(fetch.len(), 16, "{got}");
    let lines = traced(&net, &fetch);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[2] ") && l.contains("fetch started")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[0] ") && l.contains("asked for")),
        "{lines:#?}"
    );
}

/// `testnet snapshot DOC --json`, whatever its exit code (non-zero when inconsistent).
fn snapshot(net: &Net, doc: &str) -> serde_json::Value {
    let out = net.run(&["snapshot", doc, "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("snapshot: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn snapshots_taken_under_concurrent_writes_are_consistent_cuts() {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let net = Arc::new(Net::new());
    net.json(&["up", "-n", "3"]);
    let doc = net.exec_json(0, &["doc", "create", "cut", "--open", "--json"])["doc"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..3 {
        net.exec_json(i, &["doc", "join", &doc, "--json"]);
    }
    let peers: Vec<String> = net
        .status()
        .iter()
        .map(|s| s["peer_id"].as_str().unwrap().to_owned())
        .collect();

    // Each node writes `w<i>` = {"n": k, "saw": {j: n of w<j> it had read}}: write k of
    // node i causally follows the writes it saw.
    const WRITES: u64 = 30;
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let (net, doc, done) = (net.clone(), doc.clone(), done.clone());
            std::thread::spawn(move || {
                let mut log = Vec::new();
                for k in 1..=WRITES {
                    let now = net.exec_json(i, &["doc", "get", &doc, "--json"]);
                    let saw: BTreeMap<usize, u64> = (0..3)
                        .filter(|j| *j != i)
                        .map(|j| (j, now[format!("w{j}")]["n"].as_u64().unwrap_or(0)))
                        .collect();
                    let value = serde_json::json!({ "n": k, "saw": saw }).to_string();
                    let w =
                        net.exec_json(i, &["doc", "set", &doc, &format!("w{i}"), &value, "--json"]);
                    log.push((w["seq"].as_u64().unwrap(), saw));
                }
                done.store(true, Ordering::Relaxed);
                log
            })
        })
        .collect();
    let mut snaps = Vec::new();
    while !done.load(Ordering::Relaxed) && snaps.len() < 20 {
        snaps.push(snapshot(&net, &doc));
        std::thread::sleep(Duration::from_millis(200));
    }
    // `log[i][k - 1]`: node i's write k, its sequence number and what it saw.
    let log: Vec<Vec<(u64, BTreeMap<usize, u64>)>> =
        writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(!snaps.is_empty());

    let mut in_flight_seen = 0;
    for s in &snaps {
        assert_eq!(s["consistent"], true, "{s:#}");
        in_flight_seen += s["in_flight"].as_array().unwrap().len();
        // What each author had written by the cut, as it recorded it itself.
        let sent: Vec<u64> = (0..3)
            .map(|i| s["nodes"][i]["cut"][&peers[i]].as_u64().unwrap_or(0))
            .collect();
        for i in 0..3 {
            for (seq, saw) in &log[i] {
                if *seq > sent[i] {
                    continue;
                }
                // A write in the cut: every write it saw is in the cut too.
                for (j, n) in saw {
                    if *n == 0 {
                        continue;
                    }
                    let cause = log[*j][*n as usize - 1].0;
                    assert!(
                        cause <= sent[*j],
                        "node {i}'s write {seq} is in the cut but node {j}'s write {cause} it saw is not: {s:#}"
                    );
                }
            }
        }
    }
    eprintln!(
        "{} snapshots under writes, {in_flight_seen} in-flight ranges seen",
        snaps.len()
    );

    // At rest: every node at the cut holds everything, with one digest.
    net.run_json(&["wait-converged", &doc, "--timeout", "60"]);
    let s = snapshot(&net, &doc);
    assert_eq!(s["consistent"], true, "{s:#}");
    assert!(s["in_flight"].as_array().unwrap().is_empty(), "{s:#}");
    let digests: Vec<&str> = (0..3)
        .map(|i| s["nodes"][i]["digest"].as_str().unwrap())
        .collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "{s:#}");
    let info = net.exec_json(0, &["doc", "info", &doc, "--json"]);
    assert_eq!(
        info["digest"], digests[0],
        "the cut of everything is the document"
    );
}
