//! A restarted node finds its way back: it listens on the port it had, and without any
//! `--bootstrap` reconnects to the peers it met before (kept in its store) and resumes
//! replicating its documents. Daemons on 127.0.0.1, and across a NAT in network
//! namespaces; killed when the test ends.

use std::path::Path;
use std::time::Duration;

use lattice_testnet::daemon::Daemon;
use lattice_testnet::netns::{self, Lab, NatKind};

mod common;

use common::{
    addr_at, create_doc, run_ok, skip, wait_converged, wait_for_ok, Net, BIN, LAB_LISTEN,
};

/// The daemon's listen addresses, sorted: TCP and QUIC listeners report in either order.
fn listen_addrs(d: &Daemon) -> Vec<String> {
    let mut addrs: Vec<String> = run_ok(d, &["id"])["listen_addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    addrs.sort();
    addrs
}

fn connected_to(d: &Daemon, peer: &str) -> bool {
    run_ok(d, &["peers"]).as_array().is_some_and(|l| {
        l.iter()
            .any(|p| p["peer_id"] == peer && p["connected"] == true)
    })
}

#[test]
fn a_restarted_node_rejoins_its_peers_on_its_port_without_bootstrap() {
    let mut net = Net::new();
    let a = net.start(&[]);
    let boot = net.nodes[a].addr().unwrap();
    // b is a DHT client: a never dials it back, so only b's own memory can bring the two
    // together again.
    let client = ["--dht-mode".to_owned(), "client".to_owned()];
    let b = net.start(&[
        client[0].clone(),
        client[1].clone(),
        "--bootstrap".into(),
        boot,
    ]);
    rejoins(&mut net, a, b, |dir| {
        Daemon::start(Path::new(BIN), dir, &client).expect("b restarts")
    });
}

/// The same across a NAT, in network namespaces (root only; skipped elsewhere): b sits
/// behind a port-preserving NAT, as a laptop at home, a on the internet.
#[test]
fn behind_a_nat_a_restarted_node_rejoins_without_bootstrap() {
    let test = "rejoin::behind_a_nat_a_restarted_node_rejoins_without_bootstrap";
    if let Some(why) = netns::unavailable() {
        skip(test, &why);
        return;
    }
    let mut lab = Lab::new("ltrejoin").unwrap();
    let public = lab.public_host("a").unwrap();
    let home = lab.natted_host("b", NatKind::Cone).unwrap();
    let mut net = Net::new();
    let a = net.start_in(&public.netns, &[]);
    let boot = addr_at(&net.nodes[a], public.addr);
    let b = net.start_in(&home.netns, &["--bootstrap".into(), boot]);
    rejoins(&mut net, a, b, |dir| {
        // The same listen addresses as before (port 0: the kept port), no --bootstrap.
        let args = LAB_LISTEN.map(String::from);
        Daemon::start_in(&home.netns, Path::new(BIN), dir, &args).expect("b restarts")
    });
    drop(net);
    drop(lab);
}

/// b, connected to a, shares a document with it; b stops, a restarts and writes, and b
/// started again by `restart` (no --bootstrap) is back on its port, with a, caught up.
fn rejoins(net: &mut Net, a: usize, b: usize, restart: impl FnOnce(&Path) -> Daemon) {
    let a_id = net.nodes[a].peer_id().unwrap();
    let b_dir = net.nodes[b].dir.clone();
    wait_for_ok("b to connect to a", || {
        Ok(connected_to(&net.nodes[b], &a_id).then_some(()))
    });

    let doc = create_doc(&net.nodes[a], "notes", &["--open"]);
    run_ok(&net.nodes[b], &["doc", "join", &doc]);
    run_ok(&net.nodes[a], &["doc", "set", &doc, "k", "1"]);
    wait_converged(&[&net.nodes[a], &net.nodes[b]], &doc);
    let port_before = listen_addrs(&net.nodes[b]);
    assert!(!port_before.is_empty());

    // b stops (saving the peers it knows); a restarts, forgetting how it last reached b,
    // and writes while b is away.
    let status = net.nodes[b].terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "exit status {status}");
    net.nodes[a].restart().unwrap();
    run_ok(&net.nodes[a], &["doc", "set", &doc, "k", "2"]);

    // b starts again with no --bootstrap: same addresses, back with a, caught up.
    net.nodes[b] = restart(&b_dir);
    assert_eq!(
        listen_addrs(&net.nodes[b]),
        port_before,
        "same port after a restart"
    );
    wait_for_ok("b to reconnect to a on its own", || {
        Ok(connected_to(&net.nodes[b], &a_id).then_some(()))
    });
    let content = wait_converged(&[&net.nodes[a], &net.nodes[b]], &doc);
    assert_eq!(content["k"], 2);
}
