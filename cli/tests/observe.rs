//! Seeing what the network does (issue #16), end to end with real daemons on 127.0.0.1:
//! trace ids followed through a testnet's logs, sync lag in `doc info` and
//! `testnet wait-converged`.

mod common;

use common::testnet::Net;
use common::{EVERY, WAIT};
use lattice_testnet::daemon::wait_for;

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
