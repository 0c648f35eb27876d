//! End-to-end tests of the real `lattice` binary: daemons in temporary directories on
//! 127.0.0.1 (no mDNS, no UPnP), driven through the CLI and the raw control socket.
//! Every daemon is killed when its test ends, pass or fail; a failing test prints each
//! node's log tail.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use lattice_testnet::daemon::{wait_for, Daemon};
use serde_json::Value;

mod common;

use common::raw::{cbor, closed, connect_with_hello, error_code, frame, read_frame};
use common::{run_ok, Net, BIN, EVERY, WAIT};

fn peers(d: &Daemon) -> Vec<Value> {
    run_ok(d, &["peers"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_peer(list: &[Value], id: &str, pred: impl Fn(&Value) -> bool) -> bool {
    list.iter().any(|p| p["peer_id"] == id && pred(p))
}

#[test]
fn three_daemons_find_each_other_through_the_dht() {
    let mut net = Net::new();
    let a = net.start(&[]);
    let boot = net.nodes[a].addr().unwrap();
    let b = net.start(&["--bootstrap".into(), boot.clone()]);
    let c = net.start(&["--bootstrap".into(), boot]);
    let b_id = net.nodes[b].peer_id().unwrap();
    let nc = &net.nodes[c];
    // C was told only about A, yet its routing table learns B.
    wait_for("C's routing table to hold B", WAIT, EVERY, || {
        Ok(has_peer(&peers(nc), &b_id, |p| p["in_dht"] == true).then_some(()))
    })
    .unwrap();
    let status = run_ok(nc, &["status"]);
    assert!(status["dht_peers"].as_u64().unwrap() >= 2, "{status}");
    // C reaches B by peer id alone, with the address it learned from the DHT.
    let dialed = run_ok(nc, &["dial", &format!("/p2p/{b_id}")]);
    assert_eq!(dialed["peer_id"], b_id.as_str());
    wait_for("a ping round trip to B", WAIT, EVERY, || {
        Ok(has_peer(&peers(nc), &b_id, |p| {
            p["connected"] == true && p["rtt_ms"].is_number()
        })
        .then_some(()))
    })
    .unwrap();
    // Human output names the peer too.
    let text = nc.cli(&["peers"]).unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains(&b_id));
}

#[test]
fn the_small_profile_makes_a_dht_client_with_a_small_connection_target() {
    let mut net = Net::new();
    let a = net.start(&[]);
    let boot = net.nodes[a].addr().unwrap();
    let b = net.start(&[
        "--profile".into(),
        "small".into(),
        "--bootstrap".into(),
        boot,
    ]);
    let (na, nb) = (&net.nodes[a], &net.nodes[b]);
    let sa = run_ok(na, &["status"]);
    assert_eq!(sa["connection_target"]["low"], 32, "{sa}");
    assert_eq!(sa["connection_target"]["high"], 64, "{sa}");
    let sb = run_ok(nb, &["status"]);
    assert_eq!(sb["connection_target"]["low"], 8, "{sb}");
    assert_eq!(sb["connection_target"]["high"], 16, "{sb}");
    assert_eq!(sb["relay_service"], false, "{sb}");
    let text = String::from_utf8_lossy(&nb.cli(&["status"]).unwrap().stdout).into_owned();
    assert!(text.contains("8-16 peers when idle"), "{text}");
    // B asks the DHT but answers nobody: A keeps it out of its routing table.
    let b_id = nb.peer_id().unwrap();
    wait_for("A to see B connected", WAIT, EVERY, || {
        Ok(has_peer(&peers(na), &b_id, |p| p["connected"] == true).then_some(()))
    })
    .unwrap();
    // Identify has run once B has A in its table (it learns A's kad support from it).
    wait_for("B's routing table to hold A", WAIT, EVERY, || {
        let a_id = na.peer_id()?;
        Ok(has_peer(&peers(nb), &a_id, |p| p["in_dht"] == true).then_some(()))
    })
    .unwrap();
    assert!(
        has_peer(&peers(na), &b_id, |p| p["in_dht"] == false),
        "a DHT client in A's routing table"
    );
    // A profile that does not exist is refused, naming the choices.
    let out = std::process::Command::new(BIN)
        .args(["daemon", "--profile", "tiny", "--data-dir"])
        .arg(net.dir("bad"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("default or small"));
}

#[test]
fn blocking_a_peer_disconnects_it_and_keeps_it_out_until_unblocked() {
    let mut net = Net::new();
    let a = net.start(&[]);
    let a_addr = net.nodes[a].addr().unwrap();
    let b = net.start(&["--bootstrap".into(), a_addr.clone()]);
    let (na, nb) = (&net.nodes[a], &net.nodes[b]);
    let b_id = nb.peer_id().unwrap();
    wait_for("A and B to connect", WAIT, EVERY, || {
        Ok(has_peer(&peers(na), &b_id, |p| p["connected"] == true).then_some(()))
    })
    .unwrap();

    run_ok(na, &["net", "block", &b_id]);
    let a_id = na.peer_id().unwrap();
    wait_for("A and B to drop each other", WAIT, EVERY, || {
        let gone = !has_peer(&peers(na), &b_id, |p| p["connected"] == true)
            && !has_peer(&peers(nb), &a_id, |p| p["connected"] == true);
        Ok(gone.then_some(()))
    })
    .unwrap();
    let status = run_ok(na, &["status"]);
    assert_eq!(status["blocked"], serde_json::json!([b_id]));
    let refused = nb.cli(&["dial", &a_addr]).unwrap();
    assert!(!refused.status.success(), "a blocked peer got back in");
    assert!(!String::from_utf8_lossy(&refused.stderr).trim().is_empty());
    assert!(!has_peer(&peers(na), &b_id, |p| p["connected"] == true));

    run_ok(na, &["net", "unblock", &b_id]);
    let dialed = run_ok(nb, &["dial", &a_addr]);
    assert_eq!(dialed["peer_id"], na.peer_id().unwrap());
}

#[test]
fn allow_only_keeps_just_the_named_peers() {
    let mut net = Net::new();
    let a = net.start(&[]);
    let a_addr = net.nodes[a].addr().unwrap();
    let b = net.start(&["--bootstrap".into(), a_addr.clone()]);
    let c = net.start(&["--bootstrap".into(), a_addr.clone()]);
    let (b_id, c_id) = (
        net.nodes[b].peer_id().unwrap(),
        net.nodes[c].peer_id().unwrap(),
    );
    let na = &net.nodes[a];
    wait_for("A to see B and C", WAIT, EVERY, || {
        let p = peers(na);
        Ok((has_peer(&p, &b_id, |x| x["connected"] == true)
            && has_peer(&p, &c_id, |x| x["connected"] == true))
        .then_some(()))
    })
    .unwrap();
    run_ok(na, &["net", "allow-only", &b_id]);
    let a_id = na.peer_id().unwrap();
    let nc = &net.nodes[c];
    wait_for("A to keep only B", WAIT, EVERY, || {
        let p = peers(na);
        let kept = has_peer(&p, &b_id, |x| x["connected"] == true)
            && !has_peer(&p, &c_id, |x| x["connected"] == true)
            && !has_peer(&peers(nc), &a_id, |x| x["connected"] == true);
        Ok(kept.then_some(()))
    })
    .unwrap();
    assert!(!net.nodes[c]
        .cli(&["dial", &a_addr])
        .unwrap()
        .status
        .success());
    run_ok(na, &["net", "allow-all"]);
    run_ok(&net.nodes[c], &["dial", &a_addr]);
}

#[test]
fn bad_frames_get_errors_and_the_daemon_keeps_serving() {
    let mut net = Net::new();
    let a = net.start(&[]);
    let d = &net.nodes[a];
    // A client idling on its own connection must keep working throughout.
    let mut steady = connect_with_hello(&d.socket);

    // Garbage instead of a hello: the length it implies is far over the limit.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_frame(&mut s).expect("an error answer");
    assert_eq!(error_code(&r).as_deref(), Some("frame_too_large"));
    assert!(closed(&mut s));

    // A frame claiming 4 GiB after a proper hello.
    let mut s = connect_with_hello(&d.socket);
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    let r = read_frame(&mut s).expect("an error answer");
    assert_eq!(error_code(&r).as_deref(), Some("frame_too_large"));
    assert!(closed(&mut s));

    // Bytes that are not CBOR.
    let mut s = connect_with_hello(&d.socket);
    s.write_all(&[0, 0, 0, 3, 0xff, 0xfe, 0xfd]).unwrap();
    let r = read_frame(&mut s).expect("an error answer");
    assert_eq!(error_code(&r).as_deref(), Some("malformed_frame"));
    assert!(closed(&mut s));

    // A valid frame with an unknown method: an error, and the connection stays usable.
    let mut s = connect_with_hello(&d.socket);
    frame(
        &mut s,
        &cbor(serde_json::json!({"id": 7, "method": "frobnicate", "params": null})),
    );
    let r: Value = serde_cbor::value::from_value(read_frame(&mut s).unwrap()).unwrap();
    assert_eq!(r["id"], 7);
    assert_eq!(r["error"]["code"], "unknown_method");
    frame(
        &mut s,
        &cbor(serde_json::json!({"id": 8, "method": "status"})),
    );
    let r: Value = serde_cbor::value::from_value(read_frame(&mut s).unwrap()).unwrap();
    assert_eq!(r["id"], 8);
    assert!(r["result"]["peer_id"].is_string(), "{r}");

    // Bad parameters are the client's error, not the daemon's.
    frame(
        &mut s,
        &cbor(
            serde_json::json!({"id": 9, "method": "dial", "params": {"addr": "not a multiaddr"}}),
        ),
    );
    let r: Value = serde_cbor::value::from_value(read_frame(&mut s).unwrap()).unwrap();
    assert_eq!(r["error"]["code"], "bad_request");

    // A client that disconnects mid-frame.
    let mut s = connect_with_hello(&d.socket);
    s.write_all(&[0, 0, 1, 0, 1, 2, 3]).unwrap();
    drop(s);

    // The daemon still answers, on the old connection and on new ones.
    frame(
        &mut steady,
        &cbor(serde_json::json!({"id": 1, "method": "id"})),
    );
    let r: Value = serde_cbor::value::from_value(read_frame(&mut steady).unwrap()).unwrap();
    assert_eq!(r["result"]["peer_id"], d.peer_id().unwrap());
    run_ok(d, &["status"]);
}

/// Runs a daemon that is expected to refuse to start.
fn second_daemon(data_dir: &Path, socket: &Path) -> std::process::Output {
    std::process::Command::new(BIN)
        .args([
            "daemon",
            "--no-mdns",
            "--no-upnp",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data-dir",
        ])
        .arg(data_dir)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap()
}

#[test]
fn a_damaged_store_is_named_with_the_way_out() {
    let net = Net::new();
    let data = net.dir("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("lattice.redb"), vec![0x5a; 64 << 10]).unwrap();
    let out = second_daemon(&data, &net.dir("d.sock"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // One line, naming the file and what to do; no panic.
    assert!(
        err.contains("lattice.redb") && err.contains("move it aside"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn sigterm_exits_cleanly_and_a_restart_keeps_the_peer_id() {
    let mut net = Net::new();
    let a = net.start(&[]);
    let id = net.nodes[a].peer_id().unwrap();
    let socket = net.nodes[a].socket.clone();

    // A second daemon on the same data dir, or on the same socket, is refused clearly.
    let same_dir = second_daemon(&net.nodes[a].data_dir, &net.dir("other.sock"));
    assert!(!same_dir.status.success());
    assert!(
        String::from_utf8_lossy(&same_dir.stderr).contains("already using"),
        "{same_dir:?}"
    );
    let same_socket = second_daemon(&net.dir("other-data"), &socket);
    assert!(!same_socket.status.success());
    assert!(
        String::from_utf8_lossy(&same_socket.stderr).contains("already listening"),
        "{same_socket:?}"
    );

    let status = net.nodes[a].terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(!socket.exists(), "the socket must be removed on exit");

    net.nodes[a].restart().unwrap();
    assert_eq!(net.nodes[a].peer_id().unwrap(), id);

    // After kill -9 the socket file is left behind; the next start replaces it.
    net.nodes[a].kill();
    assert!(socket.exists());
    net.nodes[a].restart().unwrap();
    assert_eq!(net.nodes[a].peer_id().unwrap(), id);
}

#[test]
fn commands_without_a_daemon_say_how_to_start_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--socket")
        .arg(tmp.path().join("none.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no daemon at") && err.contains("lattice daemon"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn metrics_are_served_as_prometheus_text() {
    let mut net = Net::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let a = net.start(&["--metrics".into(), format!("127.0.0.1:{port}")]);
    run_ok(&net.nodes[a], &["status"]);
    let body = wait_for("metrics", WAIT, EVERY, || {
        let mut s = match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => s,
            Err(_) => return Ok(None),
        };
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(Some(body))
    })
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("lattice_control_requests_total{method=\"status\",outcome=\"ok\"}"),
        "{body}"
    );
    assert!(body.contains("libp2p_"), "libp2p metrics missing");
}
