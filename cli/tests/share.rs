//! End-to-end tests of services and topics with real daemons on 127.0.0.1.

mod common;

use std::sync::mpsc as std_mpsc;

use common::{run_ok, start_net, wait_for_ok};
use lattice_node::control::api::{method, SubscribeParams, TopicMessage};
use lattice_node::control::Client;
use serde_json::Value;

fn providers(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn service_find_returns_the_advertisers_closest_first_with_their_metadata() {
    let net = start_net(3);
    let ids: Vec<String> = net.nodes.iter().map(|d| d.peer_id().unwrap()).collect();
    run_ok(
        &net.nodes[1],
        &[
            "service",
            "advertise",
            "sensor.temperature",
            "--meta",
            "unit=celsius",
            "--meta",
            "room=lab",
        ],
    );
    run_ok(
        &net.nodes[2],
        &["service", "advertise", "sensor.temperature"],
    );
    let found = wait_for_ok("both advertisers to be found", || {
        let v = net.nodes[0].json(&["service", "find", "sensor.temperature"])?;
        Ok((providers(&v).len() == 2).then_some(v))
    });
    let mut got = providers(&found);
    got.sort();
    let mut want = vec![ids[1].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(got, want);
    let rtts: Vec<f64> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rtt_ms"].as_f64().unwrap())
        .collect();
    assert!(
        rtts.windows(2).all(|w| w[0] <= w[1]),
        "not sorted by RTT: {found}"
    );
    let one = found
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == ids[1].as_str())
        .unwrap();
    assert_eq!(
        one["meta"],
        serde_json::json!({"room": "lab", "unit": "celsius"})
    );
    assert!(!one["addrs"].as_array().unwrap().is_empty(), "{one}");

    // A withdrawn service is not found, though its DHT record may linger.
    run_ok(
        &net.nodes[2],
        &["service", "withdraw", "sensor.temperature"],
    );
    let after = run_ok(&net.nodes[0], &["service", "find", "sensor.temperature"]);
    assert_eq!(providers(&after), vec![ids[1].clone()]);
    let nobody = run_ok(&net.nodes[0], &["service", "find", "gpu.render"]);
    assert!(providers(&nobody).is_empty());
}

#[test]
fn an_advertised_service_survives_a_restart_and_a_withdrawn_one_stays_withdrawn() {
    let mut net = start_net(2);
    let id = net.nodes[1].peer_id().unwrap();
    run_ok(
        &net.nodes[1],
        &[
            "service",
            "advertise",
            "sensor.humidity",
            "--meta",
            "unit=%",
        ],
    );
    run_ok(&net.nodes[1], &["service", "advertise", "gpu.render"]);
    run_ok(&net.nodes[1], &["service", "withdraw", "gpu.render"]);
    net.nodes[1].restart().unwrap();
    // Before: advertisements lived in memory only and were gone after a restart.
    let found = wait_for_ok("the service after the restart", || {
        let v = net.nodes[0].json(&["service", "find", "sensor.humidity"])?;
        Ok((providers(&v) == vec![id.clone()]).then_some(v))
    });
    assert_eq!(found[0]["meta"], serde_json::json!({"unit": "%"}));
    let gone = run_ok(&net.nodes[0], &["service", "find", "gpu.render"]);
    assert!(providers(&gone).is_empty(), "{gone}");
}

#[test]
fn a_topic_message_reaches_every_subscriber_of_a_five_node_net() {
    let net = start_net(5);
    let (tx, rx) = std_mpsc::channel();
    let mut listeners = Vec::new();
    for (i, d) in net.nodes.iter().enumerate() {
        let (socket, tx) = (d.socket.clone(), tx.clone());
        let (ready_tx, ready_rx) = std_mpsc::channel();
        listeners.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = Client::connect(&socket).await.unwrap();
                let p = SubscribeParams {
                    topic: "news".into(),
                };
                let id = c.stream::<method::TopicSubscribe>(&p).await.unwrap();
                let _ = ready_tx.send(());
                if let Ok(Some(m)) = c.next_event(&id).await {
                    let _ = tx.send((i, m));
                }
            });
        }));
        ready_rx.recv().unwrap();
    }
    // Every node's subscription must have reached the publisher before it publishes.
    wait_for_ok("node 0 to know the other four subscribers", || {
        let v = net.nodes[0].json(&["topic", "peers", "news"])?;
        Ok((v.as_array().map(Vec::len) == Some(4)).then_some(()))
    });
    run_ok(&net.nodes[0], &["topic", "publish", "news", "hello, all"]);
    let mut got: Vec<(usize, TopicMessage)> = Vec::new();
    for _ in 0..5 {
        match rx.recv_timeout(common::WAIT) {
            Ok(m) => got.push(m),
            Err(_) => break,
        }
    }
    let mut who: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    who.sort();
    assert_eq!(who, vec![0, 1, 2, 3, 4], "{got:?}");
    let from = net.nodes[0].peer_id().unwrap();
    for (_, m) in &got {
        assert_eq!(m.data, "hello, all");
        assert_eq!(m.from.as_deref(), Some(from.as_str()));
    }
    for l in listeners {
        l.join().unwrap();
    }
}
