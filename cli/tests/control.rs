//! The control socket against a careless or hostile local program (issue #17): long
//! strings, answers over the frame limit, readers that fall behind, idle connections,
//! and the error codes the protocol document promises.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::raw::{call, cbor, connect_with_hello, frame, read_frame};
use common::{run_ok, Net};
use serde_json::{json, Value};

fn daemon() -> Net {
    let mut net = Net::new();
    net.start(&[]);
    net
}

#[test]
fn peer_ids_too_long_to_be_real_are_refused_unread_and_never_echoed() {
    let net = daemon();
    let d = &net.nodes[0];
    let doc = common::create_doc(d, "acl", &[]);
    let long = "1".repeat(150_000);
    let huge = "1".repeat(1 << 20);
    let started = Instant::now();
    // Three hostile calls at once, each on its own connection.
    let calls: Vec<(&str, Value)> = vec![
        ("net.block", json!({"peers": [long.clone()]})),
        ("doc.writers", json!({"doc": doc, "add": [huge.clone()]})),
        ("dial", json!({"addr": format!("/p2p/{long}")})),
    ];
    let threads: Vec<_> = calls
        .into_iter()
        .map(|(m, p)| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let mut s = connect_with_hello(&socket);
                call(&mut s, 1, m, p)
            })
        })
        .collect();
    // Meanwhile another client is served.
    run_ok(d, &["status"]);
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r["error"]["code"], "bad_request", "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        // Before: the whole id came back in the message, after seconds of decoding.
        assert!(
            msg.len() < 2_048,
            "a {}-byte message echoes the input",
            msg.len()
        );
        assert!(msg.contains("at most"), "{msg}");
    }
    // A string over the parameter limit is refused before any method sees it.
    let mut s = connect_with_hello(&d.socket);
    let r = call(
        &mut s,
        2,
        "doc.set",
        json!({"doc": doc, "key": "k", "value": "x".repeat(2 << 20)}),
    );
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    println!("three hostile ids answered in {:?}", started.elapsed());
    // And the daemon still stops on SIGTERM.
    let mut net = net;
    net.nodes[0].terminate(Duration::from_secs(10)).unwrap();
}

#[test]
fn an_answer_over_the_frame_limit_is_a_clear_error_and_the_connection_stays_usable() {
    let net = daemon();
    let d = &net.nodes[0];
    let doc = common::create_doc(d, "big", &[]);
    let mut s = connect_with_hello(&d.socket);
    // 20 values of 900 KB: 18 MB of JSON, over the 16 MiB frame.
    let value = serde_json::to_string(&"v".repeat(900_000)).unwrap();
    for i in 0..20 {
        let r = call(
            &mut s,
            10 + i,
            "doc.set",
            json!({"doc": doc, "key": format!("k{i}"), "value": value}),
        );
        assert!(r["result"]["seq"].is_u64(), "{r}");
    }
    let r = call(&mut s, 100, "doc.get", json!({"doc": doc}));
    // Before: the connection closed with no answer.
    assert_eq!(r["id"], 100);
    assert_eq!(r["error"]["code"], "result_too_large", "{r}");
    // One key still comes back, on the same connection.
    let r = call(&mut s, 101, "doc.get", json!({"doc": doc, "key": "k3"}));
    assert_eq!(r["result"].as_str().map(str::len), Some(900_000));
    // The CLI says what happened.
    let out = d.cli(&["doc", "get", &doc]).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("frame limit"),
        "{said}"
    );
}

/// Starts a stream on a raw connection; returns once `trigger` has produced its first
/// event (the stream is then surely in place), and leaves the rest unread.
fn started_stream(net: &Net, method: &str, params: Value, trigger: impl Fn()) -> UnixStream {
    let mut s = connect_with_hello(&net.nodes[0].socket);
    frame(
        &mut s,
        &cbor(json!({"id": 1, "method": method, "params": params})),
    );
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    for _ in 0..30 {
        trigger();
        if let Some(f) = read_frame(&mut s) {
            let f: Value = serde_cbor::value::from_value(f).unwrap();
            assert!(f["event"].is_object(), "{f}");
            return s;
        }
    }
    panic!("{method} never delivered an event");
}

/// Reads a stream to its end, which a lagged event brings: (events, the count it gave).
fn drain(s: &mut UnixStream) -> (u64, Option<u64>) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (mut events, mut dropped) = (0, None);
    loop {
        let f: Value = serde_cbor::value::from_value(read_frame(s).expect("a frame")).unwrap();
        if f["end"] == true {
            return (events, dropped);
        }
        let ev = &f["event"];
        if let Some(n) = ev["lagged"]["dropped"].as_u64() {
            assert!(dropped.is_none(), "two lagged events");
            assert!(ev["lagged"]["message"]
                .as_str()
                .unwrap()
                .contains("dropped"));
            dropped = Some(n);
        } else {
            assert!(dropped.is_none(), "an event after the lagged one");
            assert!(ev.is_object(), "{f}");
            events += 1;
        }
    }
}

/// Sends `n` calls over `conns` connections, pipelined, and waits for every answer.
fn flood(net: &Net, conns: u64, n: u64, make: impl Fn(u64) -> (String, Value) + Sync) {
    std::thread::scope(|scope| {
        for c in 0..conns {
            let make = &make;
            let socket = net.nodes[0].socket.clone();
            scope.spawn(move || {
                let mut s = connect_with_hello(&socket);
                let mine: Vec<u64> = (0..n).filter(|i| i % conns == c).collect();
                // Written from a thread of its own: the answers must be read meanwhile,
                // or both sides' buffers fill and each waits for the other.
                let mut w = s.try_clone().unwrap();
                let requests: Vec<serde_cbor::Value> = mine
                    .iter()
                    .map(|&i| {
                        let (m, p) = make(i);
                        cbor(json!({"id": i + 1, "method": m, "params": p}))
                    })
                    .collect();
                let writer = std::thread::spawn(move || {
                    for r in &requests {
                        frame(&mut w, r);
                    }
                });
                for _ in &mine {
                    let r: Value =
                        serde_cbor::value::from_value(read_frame(&mut s).unwrap()).unwrap();
                    assert!(r["error"].is_null(), "{r}");
                }
                writer.join().unwrap();
            });
        }
    });
}

#[test]
fn a_watcher_that_falls_behind_is_told_exactly_what_it_missed() {
    // More than the daemon queues for a watcher that does not read (about 1,400 with the
    // socket's buffer), written fast: a client that takes no frame for 10 s is closed.
    const WRITES: u64 = 2_500;
    let net = daemon();
    let d = &net.nodes[0];
    let doc = common::create_doc(d, "busy", &[]);
    let mut watcher = started_stream(&net, "doc.watch", json!({"doc": doc}), || {
        run_ok(d, &["doc", "incr", &doc, "n", "1"]);
    });
    flood(&net, 8, WRITES, |i| {
        (
            "doc.incr".into(),
            // A few keys: each write is still one change (a counter moves).
            json!({"doc": doc, "key": format!("k{}", i % 16), "by": 1}),
        )
    });
    let (events, dropped) = drain(&mut watcher);
    // Before: about 2,800 events arrived, then the end, with no word of the rest.
    let dropped = dropped.expect("a lagged event: 2,500 changes cannot all be queued");
    assert_eq!(
        events + dropped,
        WRITES,
        "every change delivered or counted"
    );
}

#[test]
fn a_topic_subscriber_that_falls_behind_is_told_exactly_what_it_missed() {
    const MESSAGES: u64 = 5_000;
    let net = daemon();
    let d = &net.nodes[0];
    let mut sub = started_stream(&net, "topic.subscribe", json!({"topic": "t"}), || {
        run_ok(d, &["topic", "publish", "t", "first"]);
    });
    flood(&net, 4, MESSAGES, |i| {
        (
            "topic.publish".into(),
            json!({"topic": "t", "message": format!("m{i}")}),
        )
    });
    let (events, dropped) = drain(&mut sub);
    let dropped = dropped.expect("a lagged event");
    assert_eq!(
        events + dropped,
        MESSAGES,
        "every message delivered or counted"
    );
}

#[test]
fn idle_connections_are_closed_and_a_newcomer_always_gets_status() {
    let net = daemon();
    let d = &net.nodes[0];
    // Every regular slot taken: half by clients that said hello and went quiet, half by
    // streams nobody reads.
    let idle: Vec<UnixStream> = (0..32).map(|_| connect_with_hello(&d.socket)).collect();
    let streams: Vec<UnixStream> = (0..32)
        .map(|i| {
            let mut s = connect_with_hello(&d.socket);
            let topic = format!("t{i}");
            frame(
                &mut s,
                &cbor(json!({"id": 1, "method": "topic.subscribe", "params": {"topic": topic}})),
            );
            s
        })
        .collect();
    // Before: `busy` for as long as they liked.
    run_ok(d, &["status"]);
    // A spare connection answers `status`, not the rest.
    let mut spare = connect_with_hello(&d.socket);
    let r = call(&mut spare, 1, "doc.ls", Value::Null);
    assert_eq!(r["error"]["code"], "busy", "{r}");
    drop(streams);
    // A quiet connection is told why it is closed.
    let mut s = idle.into_iter().next().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let r: Value =
        serde_cbor::value::from_value(read_frame(&mut s).expect("an idle notice")).unwrap();
    assert_eq!(r["id"], 0);
    assert_eq!(r["error"]["code"], "idle", "{r}");
}

#[test]
fn a_daemon_shutting_down_says_so_to_its_clients() {
    let mut net = daemon();
    let mut s = connect_with_hello(&net.nodes[0].socket);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let d = &mut net.nodes[0];
    d.terminate(Duration::from_secs(10)).unwrap();
    let r: Value = serde_cbor::value::from_value(read_frame(&mut s).expect("a notice")).unwrap();
    // Before: the connection was closed with no answer.
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    let _ = s.write_all(&[0]);
}

#[test]
fn a_dial_that_times_out_says_timeout() {
    let net = daemon();
    // A listener that accepts and never speaks: the handshake can only time out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let peer = net.nodes[0].peer_id().unwrap();
    let mut s = connect_with_hello(&net.nodes[0].socket);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}");
    let r = call(&mut s, 1, "dial", json!({ "addr": addr }));
    // Before: `network_error`, though the document promises `timeout`.
    assert_eq!(r["error"]["code"], "timeout", "{r}");
    drop(silent);
}

#[test]
fn floods_of_tiny_items_and_long_peer_lists_are_refused_before_decoding() {
    let net = daemon();
    let d = &net.nodes[0];
    // 200,000 small integers: 200 KB on the wire, some 8 MB once decoded.
    let mut s = connect_with_hello(&d.socket);
    let many: Vec<u8> = vec![1; 200_000];
    frame(
        &mut s,
        &cbor(json!({"id": 1, "method": "doc.add", "params": {"members": many}})),
    );
    let r: Value = serde_cbor::value::from_value(read_frame(&mut s).expect("an answer")).unwrap();
    assert_eq!(r["error"]["code"], "malformed_frame", "{r}");
    // 2,000 well-formed peer ids: refused as a list, none decoded.
    let peer = d.peer_id().unwrap();
    let mut s = connect_with_hello(&d.socket);
    let r = call(&mut s, 1, "net.block", json!({"peers": vec![peer; 2_000]}));
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1000"),
        "{r}"
    );
    run_ok(d, &["status"]);
}
