//! Interop with js-libp2p: a js node (cli/tests/js, its versions pinned in package.json and
//! package-lock.json) joins a Lattice network through one node, then uses the Lattice DHT
//! (peers, providers by CID) and gossip on a Lattice topic, both ways.
//!
//! The js node is driven over stdio (one command per line, one JSON answer per line; see
//! cli/tests/js/peer.mjs). It needs node and npm; without them the test is skipped and
//! says so. Its packages are installed by `npm ci` (by `.ci/run`, or here when missing).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use common::{run_ok, skip, wait_for_ok, Net};
use lattice_node::control::api::{method, SubscribeParams};
use lattice_node::control::Client;
use serde_json::Value;

const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
/// Longest wait for one answer of the js node (each of its commands gives up after 30 s).
const ANSWER: Duration = Duration::from_secs(60);
/// Gossip topic of the Lattice application topic `interop`.
const TOPIC: &str = "/lattice/topic/interop";

/// The js-libp2p node, killed when dropped; its log is shown if the test fails.
struct JsPeer {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    log: PathBuf,
}

impl JsPeer {
    /// Starts the js node, installing its packages first if they are missing. `None`
    /// (with the test recorded as skipped) when node or npm is not installed.
    fn start(test: &str, dir: &Path, key_type: &str) -> Option<JsPeer> {
        match tool_version("node") {
            Err(why) => {
                skip(test, &format!("node is not installed ({why})"));
                return None;
            }
            Ok(v) if node_major(&v).is_some_and(|m| m < 20) => {
                skip(
                    test,
                    &format!("node {v} is too old: js-libp2p 3 needs 20 or later"),
                );
                return None;
            }
            Ok(_) => {}
        }
        // Both tests of this file may get here at once; one installs.
        static INSTALL: Mutex<()> = Mutex::new(());
        let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        // npm writes this file last: without it, an install did not finish.
        if !Path::new(JS_DIR)
            .join("node_modules/.package-lock.json")
            .is_file()
        {
            if let Err(why) = tool_version("npm") {
                skip(test, &format!("npm is not installed ({why})"));
                return None;
            }
            let out = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(JS_DIR)
                .output()
                .expect("npm runs");
            assert!(
                out.status.success(),
                "npm ci in {JS_DIR} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = dir.join(format!("js-peer-{key_type}.log"));
        let mut child = Command::new("node")
            .arg("peer.mjs")
            .current_dir(JS_DIR)
            .env("DEBUG", "libp2p:kad-dht*,libp2p:gossipsub*")
            .env("LATTICE_JS_KEY", key_type)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("js log file"))
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, answers) = mpsc::sync_channel(16);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut js = JsPeer {
            child,
            stdin,
            answers,
            log,
        };
        js.answer().expect("the js node starts");
        Some(js)
    }

    fn answer(&mut self) -> anyhow::Result<Value> {
        let line = self
            .answers
            .recv_timeout(ANSWER)
            .map_err(|_| anyhow!("the js node did not answer within {ANSWER:?}"))?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("{line:?}"))?;
        match (&v["ok"], &v["error"]) {
            (Value::Null, Value::String(e)) => bail!("js: {e}"),
            (Value::Null, _) => bail!("js answered {line}"),
            (ok, _) => Ok(ok.clone()),
        }
    }

    /// Runs one command; its answer, or the js node's error.
    fn call(&mut self, command: &str) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{command}").context("the js node has gone")?;
        self.answer()
    }

    fn must(&mut self, command: &str) -> Value {
        self.call(command)
            .unwrap_or_else(|e| panic!("{command}: {e:#}"))
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- js node log (last 60 lines) ----");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 20 for "v20.20.2".
fn node_major(version: &str) -> Option<u32> {
    version
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn tool_version(tool: &str) -> anyhow::Result<String> {
    let out = Command::new(tool).arg("--version").output()?;
    if !out.status.success() {
        bail!("{tool} --version failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn peer_ids(v: &Value, key: Option<&str>) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| match key {
            Some(k) => p[k].as_str(),
            None => p.as_str(),
        })
        .map(str::to_owned)
        .collect()
}

/// `d`'s view of `peer` in `lattice peers`, if it lists it.
fn peer_entry(d: &lattice_testnet::daemon::Daemon, peer: &str) -> anyhow::Result<Option<Value>> {
    let v = d.json(&["peers"])?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .find(|p| p["peer_id"] == peer)
        .cloned())
}

#[test]
fn a_js_libp2p_node_finds_and_is_found_provides_and_gossips_with_lattice() {
    let mut net = Net::new();
    let Some(mut js) = JsPeer::start(
        "a_js_libp2p_node_finds_and_is_found_provides_and_gossips_with_lattice",
        net.tmp.path(),
        "Ed25519",
    ) else {
        return;
    };
    net.start(&[]);
    let a_addr = net.nodes[0].addr().unwrap();
    net.start(&["--bootstrap".into(), a_addr.clone()]);
    let (a, c) = (&net.nodes[0], &net.nodes[1]);
    let a_id = a.peer_id().unwrap();
    let c_id = c.peer_id().unwrap();
    let file = net.dir("blob.bin");
    std::fs::write(&file, b"a blob a js node finds by its CID").unwrap();
    let added = run_ok(c, &["blob", "add", file.to_str().unwrap()]);
    let blob_cid = added["cid"].as_str().expect("cid").to_owned();

    // The js node dials A, and nobody else until it is told `open`: whatever it learns of
    // C, and C of it, comes through the DHT.
    let js_id = js.must("id")["peer_id"].as_str().unwrap().to_owned();
    js.must(&format!("dial {a_addr}"));
    wait_for_ok("A to take the js node into its routing table", || {
        Ok(peer_entry(a, &js_id)?.filter(|p| p["in_dht"] == true))
    });

    let found = wait_for_ok("the js node to find C through A", || {
        Ok(js.call(&format!("find-peer {c_id}")).ok())
    });
    assert_eq!(found["peer_id"], c_id.as_str(), "{found}");
    let c_port = c.addr().unwrap().split('/').nth(4).unwrap().to_owned();
    assert!(
        peer_ids(&found["addrs"], None)
            .iter()
            .any(|a| a.contains(&format!("/tcp/{c_port}"))),
        "the js node found C at other addresses than C's: {found}"
    );

    // C may have met the js node already, in one of its own DHT walks through A; either
    // way, it learned of it from A's DHT answers.
    let dialled = run_ok(c, &["dial", &format!("/p2p/{js_id}")]);
    assert_eq!(dialled["peer_id"], js_id.as_str(), "{dialled}");
    assert!(
        peer_ids(&js.must("connections"), None).contains(&c_id),
        "C dialled the js node, yet the js node has no connection to C"
    );
    js.must("open");

    let providers = wait_for_ok("the js node to find C as a provider of the blob", || {
        let v = js.call(&format!("find-providers {blob_cid}"))?;
        Ok(peer_ids(&v, None).contains(&c_id).then_some(v))
    });
    assert!(!peer_ids(&providers, None).contains(&js_id), "{providers}");

    let provided = js.must("provide");
    let js_cid = provided["cid"].as_str().expect("cid").to_owned();
    assert!(js_cid.starts_with("bafkr4"), "{provided}");
    for d in [a, c] {
        wait_for_ok("Lattice to list the js node as a provider", || {
            let v = d.json(&["blob", "providers", &js_cid])?;
            Ok(peer_ids(&v, Some("peer_id")).contains(&js_id).then_some(()))
        });
    }

    // Gossip both ways on the Lattice topic `interop`: C subscribes as a local client
    // would, the js node subscribes to its gossip topic.
    js.must(&format!("subscribe {TOPIC}"));
    let (got_tx, got) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    let socket = c.socket.clone();
    let listener = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut client = Client::connect(&socket).await.unwrap();
            let p = SubscribeParams {
                topic: "interop".into(),
            };
            let id = client.stream::<method::TopicSubscribe>(&p).await.unwrap();
            let _ = ready_tx.send(());
            while let Ok(Some(m)) = client.next_event(&id).await {
                if got_tx.send(m).is_err() {
                    break;
                }
            }
        });
    });
    ready.recv().expect("C's subscription starts");
    wait_for_ok("A to see both subscribers of the topic", || {
        let v = a.json(&["topic", "peers", "interop"])?;
        let peers = peer_ids(&v, None);
        Ok((peers.contains(&js_id) && peers.contains(&c_id)).then_some(()))
    });
    run_ok(a, &["topic", "publish", "interop", "hello from lattice"]);
    let m = js.must(&format!("wait-message {TOPIC} hello from lattice"));
    assert_eq!(m["from"], a_id.as_str(), "{m}");

    js.must(&format!("wait-subscriber {TOPIC} {c_id}"));
    js.must(&format!("publish {TOPIC} hello from js"));
    let from_js = (0..2)
        .filter_map(|_| got.recv_timeout(common::WAIT).ok())
        .find(|m| m.data == "hello from js")
        .expect("C's subscriber gets the js node's message");
    assert_eq!(from_js.from.as_deref(), Some(js_id.as_str()));
    assert_eq!(from_js.topic, "interop");

    js.must("stop");
    drop(net);
    listener
        .join()
        .expect("the subscriber thread ends with its daemon");
}

/// Lattice accepts secp256k1 identities (ECDSA too, overlay/tests/foreign.rs; js-libp2p has
/// no ECDSA peer ids) and refuses RSA ones, saying why where an operator looks.
#[test]
fn a_secp256k1_js_node_is_admitted_and_an_rsa_one_refused_with_the_reason_logged() {
    const TEST: &str =
        "a_secp256k1_js_node_is_admitted_and_an_rsa_one_refused_with_the_reason_logged";
    let mut net = Net::new();
    let Some(mut secp) = JsPeer::start(TEST, net.tmp.path(), "secp256k1") else {
        return;
    };
    let mut rsa = JsPeer::start(TEST, net.tmp.path(), "RSA").expect("node was there a moment ago");
    net.start(&[]);
    let a = &net.nodes[0];
    let a_addr = a.addr().unwrap();

    let secp_id = secp.must("id")["peer_id"].as_str().unwrap().to_owned();
    assert!(
        secp_id.starts_with("16Uiu2"),
        "not a secp256k1 peer id: {secp_id}"
    );
    secp.must(&format!("dial {a_addr}"));
    wait_for_ok(
        "A to take the secp256k1 js node into its routing table",
        || Ok(peer_entry(a, &secp_id)?.filter(|p| p["in_dht"] == true)),
    );

    let rsa_id = rsa.must("id")["peer_id"].as_str().unwrap().to_owned();
    assert!(rsa_id.starts_with("Qm"), "not an RSA peer id: {rsa_id}");
    let refused = rsa.call(&format!("dial {a_addr}"));
    assert!(refused.is_err(), "an RSA peer connected: {refused:?}");
    wait_for_ok("A's log to say why the RSA peer was refused", || {
        let log = a.log_tail(200);
        Ok(log
            .lines()
            .find(|l| l.contains("an incoming connection failed") && l.contains("rsa"))
            .map(str::to_owned))
    });
    assert!(peer_entry(a, &rsa_id).unwrap().is_none());
}
