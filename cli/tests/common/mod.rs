//! Helpers shared by the end-to-end tests: daemons of one test, killed at its end, with
//! their logs shown if it fails.

#![allow(dead_code)] // each test file uses its own subset

pub mod blobs;
pub mod raw;
pub mod testnet;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lattice_testnet::daemon::Daemon;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_lattice");
pub const WAIT: Duration = Duration::from_secs(60);
pub const EVERY: Duration = Duration::from_millis(200);

/// Daemons of one test, with their logs shown if the test fails.
pub struct Net {
    pub tmp: tempfile::TempDir,
    pub nodes: Vec<Daemon>,
}

impl Net {
    pub fn new() -> Net {
        Net {
            tmp: tempfile::tempdir().expect("temp dir"),
            nodes: Vec::new(),
        }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn start(&mut self, args: &[String]) -> usize {
        let i = self.nodes.len();
        let d = Daemon::start(Path::new(BIN), &self.dir(&format!("n{i}")), args)
            .expect("daemon starts");
        self.nodes.push(d);
        i
    }
}

/// A daemon in a namespace listens on every address of its host, TCP and QUIC, on its
/// kept port.
pub const LAB_LISTEN: [&str; 4] = [
    "--listen",
    "/ip4/0.0.0.0/tcp/0",
    "--listen",
    "/ip4/0.0.0.0/udp/0/quic-v1",
];

impl Net {
    /// Starts a daemon inside network namespace `netns`, listening on all its addresses
    /// (TCP and QUIC), plus `args`.
    pub fn start_in(&mut self, netns: &str, args: &[String]) -> usize {
        let i = self.nodes.len();
        let mut all: Vec<String> = LAB_LISTEN.map(String::from).to_vec();
        all.extend_from_slice(args);
        let d = Daemon::start_in(netns, Path::new(BIN), &self.dir(&format!("n{i}")), &all)
            .expect("daemon starts in its namespace");
        self.nodes.push(d);
        i
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, n) in self.nodes.iter().enumerate() {
                eprintln!(
                    "---- node {i}: lattice {} ----\n{}",
                    n.command_line().join(" "),
                    n.log_tail(40)
                );
            }
        }
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

/// How peers on a namespace lab's internet dial `d`, which runs on a host at `ip`: its TCP
/// port there and its peer id (its own first address may be loopback).
#[allow(dead_code)] // only the namespace tests use it
pub fn addr_at(d: &Daemon, ip: impl std::fmt::Display) -> String {
    let local = d.addr().unwrap();
    let port = local.split('/').nth(4).expect("a TCP port");
    format!("/ip4/{ip}/tcp/{port}/p2p/{}", d.peer_id().unwrap())
}

pub fn run_ok(d: &Daemon, args: &[&str]) -> Value {
    d.json(args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Starts `n` daemons; every one after the first bootstraps from the first.
pub fn start_net(n: usize) -> Net {
    let mut net = Net::new();
    net.start(&[]);
    let boot = net.nodes[0].addr().expect("first node's address");
    for _ in 1..n {
        net.start(&["--bootstrap".into(), boot.clone()]);
    }
    net
}

/// Creates a document on `d` (`extra` are `doc create` flags) and returns its id.
pub fn create_doc(d: &Daemon, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["doc", "create", name];
    args.extend_from_slice(extra);
    let v = run_ok(d, &args);
    v["doc"].as_str().expect("doc id").to_owned()
}

/// Waits until every daemon in `nodes` holds `doc` with the same digest; returns the
/// converged content.
pub fn wait_converged(nodes: &[&Daemon], doc: &str) -> Value {
    lattice_testnet::daemon::wait_for("the replicas to converge", WAIT, EVERY, || {
        let mut digests = Vec::new();
        for d in nodes {
            digests.push(d.json(&["doc", "info", doc])?["digest"].clone());
        }
        Ok(digests.windows(2).all(|w| w[0] == w[1]).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let first = run_ok(nodes[0], &["doc", "get", doc]);
    for d in &nodes[1..] {
        assert_eq!(
            run_ok(d, &["doc", "get", doc]),
            first,
            "same digest, different JSON"
        );
    }
    first
}

/// Polls `check` until it returns `Ok(Some(_))`; panics with the last error after
/// [`WAIT`].
pub fn wait_for_ok<T>(what: &str, check: impl FnMut() -> anyhow::Result<Option<T>>) -> T {
    lattice_testnet::daemon::wait_for(what, WAIT, EVERY, check).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Where tests that cannot run on this machine list themselves; `.ci/run` prints the list
/// and the count, so a skipped test is never mistaken for a passed one.
pub const SKIPPED: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/skipped.txt");

/// Records that `test` cannot run here and why.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    eprintln!("skipped: {test}: {why}");
    let line = format!("{test}: {why}\n");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(SKIPPED)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
