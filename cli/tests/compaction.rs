//! History that does not grow for ever (issue #18), end to end with real daemons on
//! 127.0.0.1: overwritten values leave every node's history once every replica holds the
//! overwrite; a node cut off past the compaction horizon stops holding that back and
//! catches up when it returns, losing nothing; a new replica and a restarted node see the
//! same document.

mod common;

use common::testnet::Net;
use common::EVERY;
use lattice_testnet::daemon::wait_for;
use serde_json::Value;
use std::time::Duration;

/// Compaction runs every 10 s and may need a digest comparison first: generous.
const COMPACTED: Duration = Duration::from_secs(120);

fn info(net: &Net, node: usize, doc: &str) -> Value {
    net.exec_json(node, &["doc", "info", doc, "--json"])
}

fn value(round: usize, node: usize) -> String {
    format!("r{round}n{node}-{}", "x".repeat(4_000))
}

/// History no longer than the content plus 2 KiB per author (a few folds, one per
/// aligned block of its writes, each with a signature, ranges and context): no
/// overwritten 4 KB value is left in it. (Without compaction it keeps every value
/// written; with only each author folding its own writes, one dead value per author.)
fn compact_enough(i: &Value, extra: u64) -> bool {
    let (log, state) = (i["log_bytes"].as_u64(), i["state_bytes"].as_u64());
    matches!((log, state), (Some(l), Some(s)) if l <= s + 3 * 2_048 + extra)
}

/// Waits until `nodes` hold the document with one digest and compacted history (`extra`:
/// bytes of dead values allowed besides).
fn wait_compacted(net: &Net, nodes: &[usize], doc: &str, extra: u64) -> Vec<Value> {
    wait_for("compacted, converged history", COMPACTED, EVERY, || {
        let infos: Vec<Value> = nodes.iter().map(|&n| info(net, n, doc)).collect();
        let same = infos.iter().all(|i| i["digest"] == infos[0]["digest"]);
        Ok((same && infos.iter().all(|i| compact_enough(i, extra))).then_some(infos))
    })
    .unwrap_or_else(|e| {
        let infos: Vec<Value> = nodes.iter().map(|&n| info(net, n, doc)).collect();
        panic!("{e}: {infos:#?}")
    })
}

#[test]
fn overwritten_values_leave_every_history_and_a_node_away_past_the_horizon_loses_nothing() {
    let net = Net::new();
    net.run_json(&[
        "up",
        "-n",
        "4",
        "--json",
        "--",
        "--compaction-horizon",
        "20s",
    ]);
    let doc = net.exec_json(0, &["doc", "create", "sensor", "--open", "--json"])["doc"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..3 {
        net.exec_json(i, &["doc", "join", &doc, "--json"]);
    }

    // Three writers take turns overwriting one key with 4 KB values: 360 KB of writes.
    for round in 0..30 {
        for node in 0..3 {
            net.exec_json(
                node,
                &["doc", "set", &doc, "k", &value(round, node), "--json"],
            );
        }
    }
    let infos = wait_compacted(&net, &[0, 1, 2], &doc, 0);
    for i in &infos {
        assert!(i["log_bytes"].as_u64().unwrap() < 20_000, "{i}");
    }

    // Node 2 is cut off and writes; node 0 overwrites the key, and node 1 overwrites
    // node 0's last value once it has it.
    net.json(&["partition", "0-1,3|2"]);
    net.exec_json(
        2,
        &["doc", "set", &doc, "mine", "written while away", "--json"],
    );
    for round in 30..40 {
        net.exec_json(0, &["doc", "set", &doc, "k", &value(round, 0), "--json"]);
    }
    wait_for("node 0's last value on node 1", COMPACTED, EVERY, || {
        let got = net.exec_json(1, &["doc", "get", &doc, "k", "--json"]);
        Ok((got.as_str() == Some(value(39, 0).as_str())).then_some(()))
    })
    .unwrap();
    net.exec_json(1, &["doc", "set", &doc, "k", &value(40, 1), "--json"]);
    // Node 2 has not seen that overwrite, so node 0's last value stays in every history
    // until, past the 20 s horizon, node 2 no longer holds it back. Node 2's own last
    // value, overwritten meanwhile, only node 2 can leave out: it stays until it returns.
    wait_compacted(&net, &[0, 1], &doc, 4_100);

    // It comes back: one document everywhere, its write kept, the last overwrite on top.
    net.json(&["heal"]);
    wait_compacted(&net, &[0, 1, 2], &doc, 0);
    for node in 0..3 {
        let content = net.exec_json(node, &["doc", "get", &doc, "--json"]);
        assert_eq!(content["mine"], "written while away", "node {node}");
        assert_eq!(
            content["k"].as_str(),
            Some(value(40, 1).as_str()),
            "node {node}"
        );
    }

    // A new replica catches up from the folds; a restarted node keeps what it had.
    net.exec_json(3, &["doc", "join", &doc, "--json"]);
    let before = info(&net, 0, &doc);
    let restarted = net.run(&["restart", "0"]);
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    let after = info(&net, 0, &doc);
    assert_eq!(after["digest"], before["digest"]);
    let infos = wait_compacted(&net, &[0, 1, 2, 3], &doc, 0);
    assert!(
        infos[3]["log_bytes"].as_u64().unwrap() < 20_000,
        "{}",
        infos[3]
    );
    // And writing goes on after the restart.
    net.exec_json(0, &["doc", "set", &doc, "k", "small", "--json"]);
    wait_compacted(&net, &[0, 1, 2, 3], &doc, 0);
}
