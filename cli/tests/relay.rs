//! Relays on 127.0.0.1: a node that says it is private reserves a slot on a public peer
//! that serves as a relay and advertises the `/p2p-circuit` address it got; a third node
//! reaches it by dialling that address, and a document replicates between them. (That
//! NATs really block the direct path is for the namespace tests; here every node could
//! reach every other directly.)

use serde_json::Value;

mod common;

use common::{create_doc, run_ok, wait_converged, wait_for_ok, Net};

fn status(d: &lattice_testnet::daemon::Daemon) -> Value {
    run_ok(d, &["status"])
}

#[test]
fn a_private_node_is_reached_through_its_relay() {
    let mut net = Net::new();
    let relay = net.start(&["--reachability".into(), "public".into()]);
    let boot = net.nodes[relay].addr().unwrap();
    let relay_id = net.nodes[relay].peer_id().unwrap();
    let s = status(&net.nodes[relay]);
    assert_eq!(s["reachability"], "public");
    assert_eq!(s["relay_service"], true);

    let private = net.start(&[
        "--reachability".into(),
        "private".into(),
        "--bootstrap".into(),
        boot.clone(),
    ]);
    let private_id = net.nodes[private].peer_id().unwrap();
    assert_eq!(status(&net.nodes[private])["relay_service"], false);
    let circuit: String = wait_for_ok("a relay reservation", || {
        let s = status(&net.nodes[private]);
        let addrs = s["relayed_addrs"].as_array().cloned().unwrap_or_default();
        Ok(addrs.first().and_then(Value::as_str).map(str::to_owned))
    });
    assert!(circuit.contains(&relay_id), "{circuit}");
    assert!(circuit.contains("/p2p-circuit"), "{circuit}");

    // `doctor` says how the node is reached.
    let report = run_ok(&net.nodes[private], &["doctor"]);
    assert_eq!(report["healthy"], true, "{report}");
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    let said = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["detail"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert!(said("reachability").contains("through 1 relay"), "{report}");
    assert!(said("relays").contains(&relay_id), "{report}");

    // A third node dials the private one through the relay.
    let other = net.start(&["--no-relay-service".into()]);
    let through = if circuit.ends_with(&private_id) {
        circuit.clone()
    } else {
        format!("{circuit}/p2p/{private_id}")
    };
    let dialled = run_ok(&net.nodes[other], &["dial", &through]);
    assert_eq!(dialled["peer_id"], private_id.as_str());
    // DCUtR then makes a direct connection beside the relayed one.
    wait_for_ok("a direct connection after the relayed one", || {
        let peers = run_ok(&net.nodes[other], &["peers"]);
        let direct = peers.as_array().is_some_and(|l| {
            l.iter().any(|p| {
                p["peer_id"] == private_id.as_str()
                    && p["connected"] == true
                    && p["relayed"] == false
            })
        });
        Ok(direct.then_some(()))
    });

    let doc = create_doc(&net.nodes[private], "notes", &["--open"]);
    run_ok(&net.nodes[other], &["doc", "join", &doc]);
    run_ok(
        &net.nodes[private],
        &["doc", "set", &doc, "k", "\"through a relay\""],
    );
    let content = wait_converged(&[&net.nodes[private], &net.nodes[other]], &doc);
    assert_eq!(content["k"], "through a relay");

    // The reservation is still held after the traffic (libp2p renews it before it expires).
    let held = status(&net.nodes[private])["relayed_addrs"].clone();
    assert!(held.as_array().is_some_and(|a| !a.is_empty()), "{held}");
}
