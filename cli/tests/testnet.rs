//! End-to-end tests of `lattice testnet` with real daemons on 127.0.0.1. The testnet is
//! always taken down when a test ends, pass or fail.

mod common;

use std::process::Command;

use common::testnet::Net;
use common::{BIN, EVERY, WAIT};
use lattice_testnet::daemon::wait_for;
use serde_json::Value;

/// True if `pid` runs (a zombie waiting for its new parent to reap it has exited).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            != Some("Z")
    })
}

#[test]
fn a_testnet_starts_partitions_heals_restarts_and_stops_with_no_orphans() {
    let net = Net::new();
    let up = net.json(&["up", "-n", "3"]);
    assert_eq!(up.as_array().unwrap().len(), 3);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(net.dir.join("testnet.json")).unwrap()).unwrap();
    assert_eq!(manifest["nodes"].as_array().unwrap().len(), 3);
    let status = net.status();
    assert!(status.iter().all(|s| s["alive"] == true), "{status:?}");
    let ids: Vec<String> = status
        .iter()
        .map(|s| s["peer_id"].as_str().unwrap().to_owned())
        .collect();
    let pids: Vec<u64> = status.iter().map(|s| s["pid"].as_u64().unwrap()).collect();

    // Node 0 on one side, 1 and 2 on the other.
    net.json(&["partition", "0|1-2"]);
    wait_for("the partition", WAIT, EVERY, || {
        let split = net.connected(0).is_empty()
            && !net.connected(1).contains(&ids[0])
            && !net.connected(2).contains(&ids[0]);
        Ok(split.then_some(()))
    })
    .unwrap();
    net.json(&["heal"]);
    wait_for("node 0 to reconnect", WAIT, EVERY, || {
        Ok((!net.connected(0).is_empty()).then_some(()))
    })
    .unwrap();

    // Kill and restart a node: it comes back with the same identity.
    net.json(&["kill", "1"]);
    assert!(!alive(pids[1]));
    assert_eq!(net.status()[1]["alive"], false);
    let r = net.json(&["restart", "1"]);
    assert_eq!(r["replaced"], false);
    let after = net.status();
    assert_eq!(after[1]["alive"], true);
    assert_eq!(after[1]["peer_id"], ids[1].as_str());
    // Killed and restarted again and again, with node 2 writing meanwhile: every restart
    // waits for the old process's lock (it used to fail about one time in four).
    let doc = net.exec_json(2, &["doc", "create", "churn", "--open", "--json"])["doc"]
        .as_str()
        .unwrap()
        .to_owned();
    for round in 0..10 {
        net.exec_json(2, &["doc", "incr", &doc, "n", "1", "--json"]);
        net.json(&["kill", "1"]);
        let r = net.json(&["restart", "1"]);
        assert_eq!(r["alive"], true, "round {round}: {r}");
    }
    // Restarting a running node says so.
    let r = net.json(&["restart", "1"]);
    assert_eq!(r["replaced"], true);

    // exec passes through output and exit codes.
    let id = net.exec_json(2, &["id", "--json"]);
    assert_eq!(id["peer_id"], ids[2].as_str());
    assert!(!net
        .run(&["exec", "2", "--", "dial", "not-an-address"])
        .status
        .success());

    // Merged logs carry every node's tag, in time order.
    let logs = String::from_utf8(net.run(&["logs"]).stdout).unwrap();
    for i in 0..3 {
        assert!(
            logs.contains(&format!("[{i}] ")),
            "node {i} missing from logs"
        );
    }

    let live: Vec<u64> = net
        .status()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap())
        .collect();
    let down = net.json(&["down"]);
    assert_eq!(down["stopped"], 3);
    wait_for("every daemon to exit", WAIT, EVERY, || {
        Ok(live.iter().all(|p| !alive(*p)).then_some(()))
    })
    .unwrap();
    assert!(!net.dir.join("testnet.json").exists());
}

#[test]
fn testnet_commands_explain_what_is_missing() {
    let net = Net::new();
    let out = net.run(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no testnet in"));
    let no_dir = Command::new(BIN)
        .args(["testnet", "status"])
        .env_remove("LATTICE_TESTNET")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&no_dir.stderr).contains("--dir"));
    net.json(&["up", "-n", "2"]);
    let again = net.run(&["up", "-n", "2"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));
    let bad = net.run(&["partition", "0-1"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least two groups"));
}
