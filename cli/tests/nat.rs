//! Across NATs, in network namespaces this test makes (root only; skipped, and listed as
//! skipped, elsewhere): two hosts behind NAT routers of their own and one public host on a
//! shared internet. The NATed nodes find out they are private, reserve slots on the public
//! node's relay, reach each other through it and then, behind port-preserving NATs,
//! directly; a document, a blob and a service lookup cross between them. Behind symmetric
//! NATs the relayed path carries them.

use std::time::Duration;

use lattice_testnet::daemon::{wait_for, Daemon};
use lattice_testnet::netns::{self, Lab, NatKind};
use serde_json::Value;

mod common;

use common::{addr_at, create_doc, run_ok, skip, wait_converged, Net, EVERY};

/// NAT detection waits for AutoNAT's first probes (15 s after start) and their answers.
const NAT_WAIT: Duration = Duration::from_secs(120);

fn lab(test: &str, prefix: &str) -> Option<Lab> {
    if let Some(why) = netns::unavailable() {
        skip(test, &why);
        return None;
    }
    Some(Lab::new(prefix).expect("the namespaces can be made"))
}

fn relayed_addr(d: &Daemon) -> String {
    wait_for("a relay reservation", NAT_WAIT, EVERY, || {
        let s = d.json(&["status"])?;
        let addrs = s["relayed_addrs"].as_array().cloned().unwrap_or_default();
        Ok(addrs.first().and_then(Value::as_str).map(str::to_owned))
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn connection(d: &Daemon, peer: &str) -> Option<Value> {
    let peers = d.json(&["peers"]).ok()?;
    peers
        .as_array()?
        .iter()
        .find(|p| p["peer_id"] == peer && p["connected"] == true)
        .cloned()
}

/// Two NATed nodes and a public one; returns (net, a, b, a's id) once a has dialled b
/// through b's relay.
fn natted_pair(lab: &mut Lab, kind: NatKind) -> (Net, usize, usize, String) {
    let public = lab.public_host("pub").unwrap();
    let ha = lab.natted_host("a", kind).unwrap();
    let hb = lab.natted_host("b", kind).unwrap();
    let mut net = Net::new();
    let p = net.start_in(&public.netns, &[]);
    let boot = addr_at(&net.nodes[p], public.addr);
    let a = net.start_in(&ha.netns, &["--bootstrap".into(), boot.clone()]);
    let b = net.start_in(&hb.netns, &["--bootstrap".into(), boot]);
    let a_id = net.nodes[a].peer_id().unwrap();
    let b_id = net.nodes[b].peer_id().unwrap();
    for i in [a, b] {
        let s = wait_for("AutoNAT to find the node private", NAT_WAIT, EVERY, || {
            let s = net.nodes[i].json(&["status"])?;
            Ok((s["reachability"] == "private").then_some(s))
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            s["relay_service"], true,
            "the flag; libp2p offers it only when public"
        );
    }
    let circuit = relayed_addr(&net.nodes[b]);
    let through = format!("{circuit}/p2p/{b_id}")
        .replace(&format!("/p2p/{b_id}/p2p/{b_id}"), &format!("/p2p/{b_id}"));
    let dialled = run_ok(&net.nodes[a], &["dial", &through]);
    assert_eq!(dialled["peer_id"], b_id.as_str());
    (net, a, b, a_id)
}

fn exchange_a_document_and_a_blob(net: &Net, a: usize, b: usize) {
    let doc = create_doc(&net.nodes[b], "notes", &["--open"]);
    run_ok(&net.nodes[a], &["doc", "join", &doc]);
    run_ok(
        &net.nodes[a],
        &["doc", "set", &doc, "from", "\"behind a NAT\""],
    );
    let content = wait_converged(&[&net.nodes[a], &net.nodes[b]], &doc);
    assert_eq!(content["from"], "behind a NAT");

    let src = net.dir("blob.bin");
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let added = run_ok(&net.nodes[b], &["blob", "add", src.to_str().unwrap()]);
    let hash = added["hash"].as_str().unwrap().to_owned();
    let out = net.dir("fetched.bin");
    run_ok(
        &net.nodes[a],
        &["blob", "get", &hash, "-o", out.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // A service advertised behind one NAT is found, metadata and all, behind the other.
    run_ok(
        &net.nodes[b],
        &["service", "advertise", "sensor.nat", "--meta", "room=attic"],
    );
    let b_id = net.nodes[b].peer_id().unwrap();
    let found = wait_for("the service to be found", NAT_WAIT, EVERY, || {
        let v = net.nodes[a].json(&["service", "find", "sensor.nat"])?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer_id"] == b_id.as_str())
            .cloned())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(found["meta"]["room"], "attic", "{found}");
}

#[test]
fn natted_nodes_meet_through_a_relay_then_directly() {
    let Some(mut lab) = lab(
        "nat::natted_nodes_meet_through_a_relay_then_directly",
        "ltcone",
    ) else {
        return;
    };
    let (net, a, b, a_id) = natted_pair(&mut lab, NatKind::Cone);
    let b_id = net.nodes[b].peer_id().unwrap();
    wait_for("a direct connection (hole punch)", NAT_WAIT, EVERY, || {
        Ok(connection(&net.nodes[a], &b_id)
            .filter(|c| c["relayed"] == false)
            .map(|_| ()))
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    exchange_a_document_and_a_blob(&net, a, b);
    assert!(connection(&net.nodes[b], &a_id).is_some());
    drop(net);
    drop(lab);
}

#[test]
fn behind_symmetric_nats_the_relay_carries_the_traffic() {
    let Some(mut lab) = lab(
        "nat::behind_symmetric_nats_the_relay_carries_the_traffic",
        "ltsym",
    ) else {
        return;
    };
    let (net, a, b, _) = natted_pair(&mut lab, NatKind::Symmetric);
    exchange_a_document_and_a_blob(&net, a, b);
    // No hole punch gets through a NAT that picks a new port per destination.
    let b_id = net.nodes[b].peer_id().unwrap();
    let c = connection(&net.nodes[a], &b_id).expect("still connected");
    assert_eq!(c["relayed"], true, "{c}");
    drop(net);
    drop(lab);
}

#[test]
fn a_namespace_testnet_comes_up_behind_nats_and_goes_down_clean() {
    let test = "nat::a_namespace_testnet_comes_up_behind_nats_and_goes_down_clean";
    if let Some(why) = netns::unavailable() {
        skip(test, &why);
        return;
    }
    let net = common::testnet::Net::new();
    std::fs::create_dir_all(&net.dir).unwrap();
    let topology = net.dir.join("topology.toml");
    std::fs::write(
        &topology,
        "[[node]]\nindex = 1\nnat = \"cone\"\n\n[[node]]\nindex = 2\nnat = \"symmetric\"\nuplink_mbit = 40\ndownlink_mbit = 80\n",
    )
    .unwrap();
    let up = net.json(&[
        "up",
        "-n",
        "3",
        "--netns",
        "--topology",
        topology.to_str().unwrap(),
    ]);
    assert_eq!(up.as_array().map(Vec::len), Some(3), "{up}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(net.dir.join("testnet.json")).unwrap()).unwrap();
    let prefix = manifest["netns"]["prefix"].as_str().unwrap().to_owned();
    let namespaces = || namespaces_of(&prefix);
    // A hub, three hosts and two NAT routers.
    assert_eq!(namespaces(), 6);
    // Node 2's links are capped both ways: on its router's side and on the internet's.
    let qdisc = |ns: &str, dev: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "tc", "qdisc", "show", "dev", dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let k = manifest["netns"]["hosts"][2]["addr"]
        .as_str()
        .unwrap()
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    let down = qdisc(&format!("{prefix}-hub"), &format!("v{k}"));
    assert!(
        down.contains("tbf") && down.contains("rate 80Mbit"),
        "{down}"
    );
    let host = manifest["netns"]["hosts"][2]["netns"].as_str().unwrap();
    let up = qdisc(&format!("{host}-nat"), "eth0");
    assert!(up.contains("tbf") && up.contains("rate 40Mbit"), "{up}");

    // The NATed nodes find out and reserve slots on node 0's relay.
    for i in [1, 2] {
        wait_for(
            "a NATed node to hold a relay reservation",
            NAT_WAIT,
            EVERY,
            || {
                let s = net.exec_json(i, &["status", "--json"]);
                let held = s["relayed_addrs"].as_array().is_some_and(|a| !a.is_empty());
                Ok(held.then_some(()))
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    // Restart works on a host of its own.
    net.json(&["restart", "1"]);
    assert!(net.status()[1]["alive"] == true);

    net.json(&["down"]);
    assert_eq!(namespaces(), 0, "down removes every namespace it made");
}

/// The doctor's verdict on `d`'s NAT mapping for `transport` once two peers have told.
fn mapping(d: &Daemon, transport: &str) -> Value {
    wait_for(
        "two peers to report the node's address",
        NAT_WAIT,
        EVERY,
        || {
            let s = d.json(&["status"])?;
            Ok(s["nat_mapping"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["transport"] == transport && m["observers"].as_u64() >= Some(2))
                .cloned())
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn doctor_tells_a_port_preserving_nat_from_a_symmetric_one() {
    let Some(mut lab) = lab(
        "nat::doctor_tells_a_port_preserving_nat_from_a_symmetric_one",
        "ltmap",
    ) else {
        return;
    };
    // Two public observers; one node behind each kind of NAT dials both.
    let mut net = Net::new();
    let mut boots = Vec::new();
    for name in ["p1", "p2"] {
        let host = lab.public_host(name).unwrap();
        let p = net.start_in(&host.netns, &[]);
        boots.push("--bootstrap".to_owned());
        boots.push(addr_at(&net.nodes[p], host.addr));
    }
    let cone = lab.natted_host("cone", NatKind::Cone).unwrap();
    let sym = lab.natted_host("sym", NatKind::Symmetric).unwrap();
    let c = net.start_in(&cone.netns, &boots);
    let s = net.start_in(&sym.netns, &boots);

    let m = mapping(&net.nodes[c], "tcp");
    assert_eq!(m["behaviour"], "endpoint-independent", "{m}");
    assert_eq!(m["port_preserving"], true, "{m}");
    assert!(
        m["seen"][0]
            .as_str()
            .unwrap()
            .starts_with(&cone.addr.to_string()),
        "{m}"
    );
    let m = mapping(&net.nodes[s], "tcp");
    assert_eq!(m["behaviour"], "symmetric", "{m}");

    let report = run_ok(&net.nodes[s], &["doctor"]);
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "nat mapping tcp")
        .cloned()
        .unwrap_or_else(|| panic!("no mapping check: {report}"));
    assert_eq!(check["verdict"], "warn", "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains("symmetric"),
        "{check}"
    );
    drop(net);
    drop(lab);
}

/// Namespaces whose names start with `prefix-`.
fn namespaces_of(prefix: &str) -> usize {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .count()
}

#[test]
fn down_cleans_up_after_an_interrupted_up() {
    let test = "nat::down_cleans_up_after_an_interrupted_up";
    if let Some(why) = netns::unavailable() {
        skip(test, &why);
        return;
    }
    // Killed (as by a closed terminal) while it makes the hosts, and while it waits for a
    // node it started.
    type Stage = fn(&Value) -> bool;
    let stages: [(&str, Stage); 2] = [
        ("some hosts made", |m| {
            m["netns"]["hosts"].as_array().is_some_and(|h| h.len() >= 2)
        }),
        ("a node started", |m| m["nodes"][0]["pid"].is_u64()),
    ];
    for (stage, reached) in stages {
        let net = common::testnet::Net::new();
        std::fs::create_dir_all(&net.dir).unwrap();
        let topology = net.dir.join("topology.toml");
        std::fs::write(&topology, "[[node]]\nindex = 1\nnat = \"cone\"\n").unwrap();
        let mut up = std::process::Command::new(common::BIN)
            .arg("testnet")
            .arg("--dir")
            .arg(&net.dir)
            .args(["up", "-n", "3", "--netns", "--topology"])
            .arg(&topology)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let manifest = || -> anyhow::Result<Value> {
            Ok(serde_json::from_slice(&std::fs::read(
                net.dir.join("testnet.json"),
            )?)?)
        };
        let m = wait_for(stage, common::WAIT, Duration::from_millis(5), || {
            Ok(manifest().ok().filter(reached))
        });
        up.kill().unwrap();
        up.wait().unwrap();
        let m = m.unwrap_or_else(|e| panic!("{e:#}"));
        let prefix = m["netns"]["prefix"].as_str().unwrap().to_owned();
        // What the killed `up` left, as recorded now (it may have gone further).
        let m = manifest().unwrap_or(m);
        let pids: Vec<u64> = m["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["pid"].as_u64())
            .collect();
        assert!(namespaces_of(&prefix) > 0, "{stage}: nothing was made");
        net.json(&["down"]);
        assert_eq!(namespaces_of(&prefix), 0, "{stage}: namespaces left");
        for pid in pids {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie of the killed `up` no one reaps.
            let alive = state
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'));
            assert!(!alive, "{stage}: daemon {pid} still runs");
        }
    }
}
