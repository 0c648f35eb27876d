//! End-to-end tests of replicated documents: real daemons on 127.0.0.1, driven through
//! the CLI (and, for bulk writes, the control socket). Every daemon is killed when its
//! test ends; a failing test prints each node's log tail.

mod common;

use std::collections::BTreeSet;
use std::sync::mpsc;

use common::{create_doc, run_ok, start_net, wait_converged, Net};
use lattice_node::control::api::{self, method};
use lattice_node::control::Client;
use lattice_testnet::daemon::{wait_for, Daemon};
use serde_json::{json, Value};

fn members(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn join_all(net: &Net, doc: &str) {
    for d in &net.nodes[1..] {
        let joined = run_ok(d, &["doc", "join", doc]);
        assert_eq!(joined["doc"], doc);
    }
}

#[test]
fn five_daemons_writing_at_once_converge() {
    let net = start_net(5);
    let doc = create_doc(&net.nodes[0], "shared", &["--open"]);
    join_all(&net, &doc);
    std::thread::scope(|s| {
        for (i, d) in net.nodes.iter().enumerate() {
            let doc = doc.as_str();
            s.spawn(move || {
                for _ in 0..5 {
                    run_ok(d, &["doc", "incr", doc, "hits", &(i + 1).to_string()]);
                }
                run_ok(d, &["doc", "incr", doc, "hits", "-1"]);
                run_ok(d, &["doc", "add", doc, "members", &format!("m{i}"), "all"]);
                run_ok(d, &["doc", "set", doc, "title", &format!("from {i}")]);
            });
        }
    });
    let nodes: Vec<&Daemon> = net.nodes.iter().collect();
    let v = wait_converged(&nodes, &doc);
    // The counter is the sum of every increment: 5 × (1+2+3+4+5) − 5.
    assert_eq!(v["hits"], 70, "{v}");
    let expected: BTreeSet<String> = (0..5)
        .map(|i| format!("m{i}"))
        .chain(["all".to_owned()])
        .collect();
    assert_eq!(members(&v["members"]), expected, "{v}");
    let title = v["title"].as_str().unwrap_or_default().to_owned();
    assert!(title.starts_with("from "), "{v}");

    // A write that follows the others wins the register; an observed remove removes.
    run_ok(&net.nodes[3], &["doc", "set", &doc, "title", "last"]);
    run_ok(&net.nodes[1], &["doc", "rm", &doc, "members", "m1", "all"]);
    let v = wait_converged(&nodes, &doc);
    assert_eq!(v["title"], "last");
    assert_eq!(
        members(&v["members"]),
        ["m0", "m2", "m3", "m4"].map(String::from).into()
    );
    // Aliases and ids both address the document; the listing knows it.
    let listed = run_ok(&net.nodes[4], &["doc", "ls"]);
    assert_eq!(listed[0]["doc"], doc.as_str());
    assert_eq!(listed[0]["name"], "shared");
    assert_eq!(
        run_ok(&net.nodes[4], &["doc", "get", "shared", "title"]),
        "last"
    );
    assert_eq!(run_ok(&net.nodes[0], &["status"])["docs"], 1);
}

fn connected(d: &Daemon) -> BTreeSet<String> {
    run_ok(d, &["peers"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected"] == true)
        .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn writes_on_both_sides_of_a_partition_all_survive_the_heal() {
    let net = start_net(4);
    let doc = create_doc(&net.nodes[0], "split", &["--open"]);
    join_all(&net, &doc);
    let ids: Vec<String> = net.nodes.iter().map(|d| d.peer_id().unwrap()).collect();
    let sides = [[0, 1], [2, 3]];
    for side in sides {
        for i in side {
            let others: Vec<&str> = side
                .iter()
                .filter(|j| **j != i)
                .map(|j| ids[*j].as_str())
                .collect();
            let mut args = vec!["net", "allow-only"];
            args.extend(others);
            run_ok(&net.nodes[i], &args);
        }
    }
    for side in sides {
        for i in side {
            wait_for("the partition to take", common::WAIT, common::EVERY, || {
                let c = connected(&net.nodes[i]);
                Ok(c.iter()
                    .all(|p| side.iter().any(|j| ids[*j] == *p))
                    .then_some(()))
            })
            .unwrap();
        }
    }
    // Both sides write; every acknowledged write is recorded.
    let acked: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = net
            .nodes
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let doc = doc.as_str();
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for k in 0..10 {
                        let m = format!("n{i}-{k}");
                        if d.json(&["doc", "add", doc, "set", &m]).is_ok() {
                            mine.push(m);
                        }
                        run_ok(d, &["doc", "incr", doc, "count"]);
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(acked.len(), 40);
    // Nothing crossed while split (the own side's writes may still be in flight).
    let left = members(&run_ok(&net.nodes[0], &["doc", "get", &doc, "set"]));
    assert!(
        left.iter()
            .all(|m| m.starts_with("n0-") || m.starts_with("n1-")),
        "writes crossed the partition: {left:?}"
    );

    for d in &net.nodes {
        run_ok(d, &["net", "allow-all"]);
    }
    let c_addr = net.nodes[2].addr().unwrap();
    run_ok(&net.nodes[0], &["dial", &c_addr]);
    let nodes: Vec<&Daemon> = net.nodes.iter().collect();
    let v = wait_converged(&nodes, &doc);
    let have = members(&v["set"]);
    let lost: Vec<&String> = acked.iter().filter(|m| !have.contains(*m)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(have.len(), 40);
    assert_eq!(v["count"], 40);
}

#[test]
fn kill_9_right_after_acknowledged_writes_loses_none_of_them() {
    let mut net = start_net(2);
    let doc = create_doc(&net.nodes[0], "durable", &["--open"]);
    join_all(&net, &doc);
    // Node 1 writes as fast as it can; it is killed once 20 writes are acknowledged.
    let (tx, rx) = mpsc::channel();
    let writer = {
        let socket = net.nodes[1].socket.clone();
        let doc = doc.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(mut c) = Client::connect(&socket).await else {
                    return;
                };
                for k in 0..10_000 {
                    let p = api::MembersParams {
                        doc: doc.clone(),
                        key: "acked".into(),
                        members: vec![format!("w{k}")],
                    };
                    match c.call::<method::DocAdd>(&p).await {
                        Ok(_) => {
                            if tx.send(format!("w{k}")).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        })
    };
    let mut acked: Vec<String> = rx.iter().take(20).collect();
    net.nodes[1].kill();
    writer.join().unwrap();
    acked.extend(rx.try_iter());
    net.nodes[1].restart().unwrap();
    let after = members(&run_ok(&net.nodes[1], &["doc", "get", &doc, "acked"]));
    let lost: Vec<&String> = acked.iter().filter(|m| !after.contains(*m)).collect();
    assert!(
        lost.is_empty(),
        "kill -9 lost acknowledged writes: {lost:?}"
    );
    // And they reach the other node once the restarted one is back.
    let nodes: Vec<&Daemon> = net.nodes.iter().collect();
    let v = wait_converged(&nodes, &doc);
    assert!(acked.iter().all(|m| members(&v["acked"]).contains(m)));
}

#[test]
fn a_node_joining_after_a_thousand_writes_catches_up_by_anti_entropy() {
    let mut net = start_net(1);
    let doc = create_doc(&net.nodes[0], "history", &["--open"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::connect(&net.nodes[0].socket).await.unwrap();
        for i in 0..1_000 {
            let p = api::IncrParams {
                doc: doc.clone(),
                key: format!("k{}", i % 100),
                by: 1,
            };
            c.call::<method::DocIncr>(&p).await.unwrap();
        }
    });
    // The newcomer was not there for any gossip: only anti-entropy can bring the history.
    let boot = net.nodes[0].addr().unwrap();
    net.start(&["--bootstrap".into(), boot]);
    run_ok(&net.nodes[1], &["doc", "join", &doc]);
    let nodes: Vec<&Daemon> = net.nodes.iter().collect();
    let v = wait_converged(&nodes, &doc);
    assert_eq!(v.as_object().map(|o| o.len()), Some(100));
    assert!(
        v.as_object().unwrap().values().all(|n| *n == json!(10)),
        "{v}"
    );
}

#[test]
fn a_watcher_sees_changes_written_on_another_node() {
    use std::io::{BufRead, BufReader};
    let net = start_net(2);
    let (a, b) = (&net.nodes[0], &net.nodes[1]);
    let doc = create_doc(a, "watched", &["--open"]);
    run_ok(b, &["doc", "join", &doc]);
    let mut watch = std::process::Command::new(common::BIN)
        .args([
            "--socket",
            b.socket.to_str().unwrap(),
            "doc",
            "watch",
            &doc,
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Written on the other node: it arrives by gossip or anti-entropy, and the watcher
    // hears of it.
    let seen = common::wait_for_ok("a watch line for the remote write", || {
        run_ok(a, &["doc", "incr", &doc, "remote", "1"]);
        Ok(rx
            .recv_timeout(std::time::Duration::from_secs(2))
            .ok()
            .filter(|l| l.contains("remote")))
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.contains("remote"), "{seen}");
}
