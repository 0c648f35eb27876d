//! Process testnets: N daemons on 127.0.0.1 from one directory — start, inspect, kill,
//! restart, partition, heal, and stop them all. Node 0 is every other node's bootstrap.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use lattice_node::control::api::{method, NoParams};

use crate::daemon::{call, wait_for, Daemon, START_TIMEOUT};
use crate::manifest::{Manifest, Node};
use crate::topology::{self, Hosts, Topology};

/// How long `up` waits for every node to join node 0.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `down` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One node as `testnet status` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub index: usize,
    pub peer_id: Option<String>,
    pub pid: Option<u32>,
    pub alive: bool,
    /// Connected peers, if the node answered.
    pub peers: Option<u64>,
    pub listen: Option<String>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

pub struct Testnet {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// True if `pid` is a live `lattice daemon` serving `socket` (not a reused pid).
pub(crate) fn is_our_daemon(pid: u32, socket: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let want = socket.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == want)
}

/// True once the daemon `pid` serving `socket` has exited: no such process, a zombie
/// waiting to be reaped, or the pid already reused by another program. (Its command line
/// vanishes while it is still tearing down, so that alone is not enough.)
fn gone(pid: u32, socket: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    if matches!(state, Some("Z" | "X")) {
        return true;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| !c.is_empty() && !is_our_daemon(pid, socket))
}

impl Testnet {
    /// Starts `n` nodes in `dir`; returns once every node has node 0 in its routing table
    /// (or is connected to it).
    /// `progress(started, n)` is called as nodes come up.
    pub fn up(
        bin: &Path,
        dir: &Path,
        n: usize,
        base_port: Option<u16>,
        daemon_args: &[String],
        topology: Option<&Topology>,
        mut progress: impl FnMut(&str, usize, usize),
    ) -> Result<Testnet> {
        ensure!(n >= 1, "a testnet needs at least one node");
        if topology.is_some() {
            topology::check_possible()?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if let Ok(old) = Testnet::open(dir) {
            if old.status().iter().any(|s| s.alive) {
                bail!(
                    "a testnet is already running in {} (`lattice testnet down --dir {}` first)",
                    dir.display(),
                    dir.display()
                );
            }
        }
        let dir = std::fs::canonicalize(dir)?;
        let mut net = Testnet {
            dir: dir.clone(),
            manifest: Manifest {
                bin: bin.into(),
                base_port,
                daemon_args: daemon_args.to_vec(),
                nodes: Vec::new(),
                netns: None,
            },
        };
        for i in 0..n {
            let node_dir = net.node_dir(i);
            net.manifest.nodes.push(Node {
                index: i,
                peer_id: None,
                socket: node_dir.join("lattice.sock"),
                listen: None,
                pid: None,
                log: node_dir.join("daemon.log"),
                data_dir: node_dir.join("data"),
            });
        }
        net.manifest.save(&dir)?;
        if let Some(t) = topology {
            // Recorded before any namespace exists, so `down` finds them all.
            let prefix = topology::prefix_for(&dir);
            net.manifest.netns = Some(Hosts {
                prefix: prefix.clone(),
                hosts: Vec::new(),
            });
            net.manifest.save(&dir)?;
            let manifest = &mut net.manifest;
            topology::make_hosts(&prefix, n, t, |host| {
                if let Some(h) = manifest.netns.as_mut() {
                    h.hosts.push(host);
                }
                manifest.save(&dir)
            })?;
            progress("hosts", n, n);
        }
        // One at a time: a first start picks a free port by binding and releasing it,
        // which two daemons starting together could both pick. (Starting 16 at a time
        // did not make `up -n 100` measurably faster: the daemons' own work is the cost.)
        for i in 0..n {
            net.start_node(i)?;
            progress("started", i + 1, n);
        }
        if n > 1 {
            let boot = net.manifest.nodes[0]
                .peer_id
                .clone()
                .context("node 0 has no peer id")?;
            for i in 1..n {
                let node = &net.manifest.nodes[i];
                wait_for(
                    &format!("node {i} to join node 0"),
                    JOIN_TIMEOUT,
                    Duration::from_millis(50),
                    || {
                        let peers = call::<method::Peers>(&node.socket, &NoParams)?;
                        // Connected, or in the routing table: node 0's connection
                        // manager may have closed an idle connection by now.
                        let joined = peers
                            .iter()
                            .any(|p| p.peer_id == boot && (p.connected || p.in_dht));
                        Ok(joined.then_some(()))
                    },
                )
                .with_context(|| format!("node {i} log tail:\n{}", tail(&node.log, 20)))?;
                progress("joined", i + 1, n);
            }
        }
        Ok(net)
    }

    pub fn open(dir: &Path) -> Result<Testnet> {
        Ok(Testnet {
            dir: dir.into(),
            manifest: Manifest::load(dir)?,
        })
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{i}"))
    }

    fn node(&self, i: usize) -> Result<&Node> {
        self.manifest.nodes.get(i).with_context(|| {
            format!(
                "no node {i}: this testnet has nodes 0-{}",
                self.manifest.nodes.len() - 1
            )
        })
    }

    /// A live node other than `i` to bootstrap from (node 0 first).
    fn bootstrap_for(&self, i: usize) -> Option<String> {
        self.manifest
            .nodes
            .iter()
            .filter(|n| n.index != i && n.pid.is_some_and(|p| is_our_daemon(p, &n.socket)))
            .find_map(|n| n.listen.clone())
    }

    /// Starts node `i` (detached), records its pid and address.
    fn start_node(&mut self, i: usize) -> Result<()> {
        // A daemon that was just killed may still hold its data dir's lock for a moment
        // (and one started by someone else may hold it for good): wait for it, briefly.
        let data = self.node_dir(i).join("data");
        wait_for(
            &format!("node {i}'s data directory to be free"),
            STOP_GRACE,
            Duration::from_millis(20),
            || Ok(lock_free(&data).then_some(())),
        )
        .with_context(|| format!("another lattice daemon still uses {}", data.display()))?;
        let mut args = Vec::new();
        let port = match self.manifest.base_port {
            Some(base) => u16::try_from(u32::from(base) + i as u32)
                .context("--base-port plus node count exceeds 65535")?,
            None => 0,
        };
        let host = match &self.manifest.netns {
            Some(h) => Some(h.hosts.get(i).cloned().with_context(|| {
                format!("node {i} has no host (an interrupted `up`: take it down and up again)")
            })?),
            None => None,
        };
        match &host {
            // Every address of its own host, TCP and QUIC, like a node on a real machine.
            Some(_) => args.extend([
                "--listen".to_owned(),
                format!("/ip4/0.0.0.0/tcp/{port}"),
                "--listen".to_owned(),
                format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
            ]),
            None if port != 0 => {
                args.extend(["--listen".to_owned(), format!("/ip4/127.0.0.1/tcp/{port}")])
            }
            None => {}
        }
        if let Some(b) = self.bootstrap_for(i) {
            args.extend(["--bootstrap".to_owned(), b]);
        }
        args.extend(self.manifest.daemon_args.iter().cloned());
        let (bin, dir) = (&self.manifest.bin, self.node_dir(i));
        let netns = host.as_ref().map(|h| h.netns.as_str());
        let mut d = Daemon::spawn_own_group(netns, bin, &dir, &args)
            .with_context(|| format!("node {i} did not start"))?;
        // On record before the wait: `down` after an interrupted `up` stops it too.
        self.manifest.nodes[i].pid = d.pid();
        self.manifest.save(&self.dir)?;
        d.wait_ready(START_TIMEOUT)
            .with_context(|| format!("node {i} did not start"))?;
        let peer_id = d.peer_id()?;
        let listen = match &host {
            // Others dial its internet address; a node behind a NAT cannot be dialled.
            Some(h) if h.natted => None,
            Some(h) => {
                let local = d.addr()?;
                let port = local.split('/').nth(4).context("a TCP port")?.to_owned();
                Some(format!("/ip4/{}/tcp/{port}/p2p/{peer_id}", h.addr))
            }
            None => Some(d.addr()?),
        };
        let pid = d.detach();
        let node = &mut self.manifest.nodes[i];
        node.pid = pid;
        node.peer_id = Some(peer_id);
        node.listen = listen;
        self.manifest.save(&self.dir)
    }

    /// Runs `lattice --socket <node i> ARGS...`.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<Output> {
        let node = self.node(i)?;
        std::process::Command::new(&self.manifest.bin)
            .arg("--socket")
            .arg(&node.socket)
            .args(args)
            .output()
            .context("cannot run lattice")
    }

    /// Runs a lattice command against node `i` with this process's stdin, stdout and
    /// stderr, so streaming commands (`doc watch`) print as they go.
    pub fn exec(&self, i: usize, args: &[&str]) -> Result<std::process::ExitStatus> {
        let node = self.node(i)?;
        std::process::Command::new(&self.manifest.bin)
            .arg("--socket")
            .arg(&node.socket)
            .args(args)
            .status()
            .context("cannot run lattice")
    }

    fn cli_json(&self, i: usize, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(i, &all)?;
        ensure!(
            out.status.success(),
            "node {i}: `lattice {}`: {}",
            all.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub fn status(&self) -> Vec<NodeStatus> {
        self.manifest
            .nodes
            .iter()
            .map(|n| {
                let alive = n.pid.is_some_and(|p| is_our_daemon(p, &n.socket));
                let peers = if alive {
                    call::<method::Status>(&n.socket, &NoParams)
                        .ok()
                        .map(|s| s.peers as u64)
                } else {
                    None
                };
                NodeStatus {
                    index: n.index,
                    peer_id: n.peer_id.clone(),
                    pid: n.pid,
                    alive,
                    peers,
                    listen: n.listen.clone(),
                    socket: n.socket.clone(),
                    log: n.log.clone(),
                }
            })
            .collect()
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        let pid = node
            .pid
            .filter(|p| is_our_daemon(*p, &node.socket))
            .with_context(|| format!("node {i} is not running"))?;
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
        wait_for(
            &format!("node {i} to die"),
            STOP_GRACE,
            Duration::from_millis(20),
            || Ok(gone(pid, &node.socket).then_some(())),
        )?;
        Ok(())
    }

    /// Starts node `i` again on its data dir (same peer id). A node still running is
    /// killed first; the answer says whether it was (`true`).
    pub fn restart(&mut self, i: usize) -> Result<bool> {
        let node = self.node(i)?;
        let running = node.pid.filter(|p| is_our_daemon(*p, &node.socket));
        if let Some(pid) = running {
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
            let socket = node.socket.clone();
            wait_for(
                "the old process to die",
                STOP_GRACE,
                Duration::from_millis(20),
                || Ok(gone(pid, &socket).then_some(())),
            )?;
        }
        self.start_node(i)?;
        Ok(running.is_some())
    }

    /// Splits the nodes into groups that only talk among themselves, e.g. `"0-4|5-9"`.
    /// Every node must be in exactly one group.
    pub fn partition(&self, spec: &str) -> Result<()> {
        let groups = parse_groups(spec, self.manifest.nodes.len())?;
        for group in &groups {
            let ids: Vec<String> = group
                .iter()
                .filter_map(|i| self.manifest.nodes[*i].peer_id.clone())
                .collect();
            for &i in group {
                let me = self.manifest.nodes[i].peer_id.clone();
                let mut args = vec!["net", "allow-only"];
                let others: Vec<&str> = ids
                    .iter()
                    .filter(|p| Some(*p) != me.as_ref())
                    .map(String::as_str)
                    .collect();
                if others.is_empty() {
                    // A group of one: allow only itself, which admits nobody else.
                    args.push(me.as_deref().unwrap_or_default());
                } else {
                    args.extend(others);
                }
                self.cli_json(i, &args)?;
            }
        }
        Ok(())
    }

    /// Ends any partition and reconnects every node to its bootstrap.
    pub fn heal(&self) -> Result<()> {
        for n in &self.manifest.nodes {
            self.cli_json(n.index, &["net", "allow-all"])?;
        }
        for n in &self.manifest.nodes {
            if let Some(b) = self.bootstrap_for(n.index) {
                // Best effort: the DHT reconnects the rest.
                let _ = self.cli(n.index, &["dial", &b]);
            }
        }
        Ok(())
    }

    /// Stops every node: SIGTERM, then SIGKILL for any still alive after a grace period.
    /// Returns how many were running.
    pub fn down(&self) -> Result<usize> {
        let live: Vec<(u32, &Path)> = self
            .manifest
            .nodes
            .iter()
            .filter_map(|n| {
                n.pid
                    .filter(|p| is_our_daemon(*p, &n.socket))
                    .map(|p| (p, n.socket.as_path()))
            })
            .collect();
        for (pid, _) in &live {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
        let stopped = wait_for(
            "nodes to stop",
            STOP_GRACE,
            Duration::from_millis(50),
            || Ok(live.iter().all(|(p, s)| gone(*p, s)).then_some(())),
        );
        if stopped.is_err() {
            for (pid, socket) in &live {
                if is_our_daemon(*pid, socket) {
                    let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                }
            }
        }
        if let Some(h) = &self.manifest.netns {
            crate::netns::remove_all(&h.prefix)?;
        }
        std::fs::remove_file(Manifest::path(&self.dir)).ok();
        Ok(live.len())
    }

    /// Every node's log merged in time order, each line tagged with its node; with
    /// `trace`, only the lines that name that trace id (one write's or fetch's path).
    pub fn logs(&self, out: &mut impl Write, trace: Option<&str>) -> Result<()> {
        let mut lines: Vec<(String, usize, String)> = Vec::new();
        for n in &self.manifest.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let mut stamp = String::new();
            for line in text.lines() {
                // Lines start with a timestamp; continuation lines (a panic's backtrace)
                // keep the one before them, and so stay in place.
                if let Some(t) = stamp_of(line) {
                    stamp = t.to_owned();
                }
                if trace.is_none_or(|t| names_trace(line, t)) {
                    lines.push((stamp.clone(), n.index, line.to_owned()));
                }
            }
        }
        lines.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (_, i, line) in lines {
            writeln!(out, "[{i}] {line}")?;
        }
        Ok(())
    }
}

/// True if a log line (text or JSON) names trace id `trace`.
pub fn names_trace(line: &str, trace: &str) -> bool {
    let t = trace.trim().to_ascii_lowercase();
    !t.is_empty()
        && (line.contains(&format!("trace={t}")) || line.contains(&format!("\"trace\":\"{t}\"")))
}

/// True if nobody holds `<data>/lock` (the daemon's one-per-directory lock).
fn lock_free(data: &Path) -> bool {
    let Ok(file) = std::fs::File::open(data.join("lock")) else {
        return true; // never started: no lock file yet
    };
    // Taken and at once released (dropped) if free.
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
}

/// The timestamp a log line starts with: RFC 3339 text lines, or the `timestamp` field of
/// JSON lines (`--log-format json`).
fn stamp_of(line: &str) -> Option<&str> {
    if line.starts_with('{') {
        let rest = line.split_once("\"timestamp\":\"")?.1;
        return rest.split('"').next();
    }
    line.split_whitespace()
        .next()
        .filter(|t| t.len() >= 20 && t.as_bytes()[4] == b'-')
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Parses `"0-4|5,7|6,8-9"` into groups of node indices, each node exactly once.
pub fn parse_groups(spec: &str, nodes: usize) -> Result<Vec<Vec<usize>>> {
    let mut seen = BTreeSet::new();
    let mut groups = Vec::new();
    for g in spec.split('|') {
        let mut group = Vec::new();
        for part in g.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
                None => (part.parse(), part.parse()),
            };
            let (lo, hi) = (
                lo.with_context(|| format!("bad node range {part:?}"))?,
                hi.with_context(|| format!("bad node range {part:?}"))?,
            );
            ensure!(lo <= hi, "bad node range {part:?}: {lo} > {hi}");
            ensure!(
                hi < nodes,
                "node {hi} does not exist (nodes 0-{})",
                nodes - 1
            );
            for i in lo..=hi {
                ensure!(seen.insert(i), "node {i} is in two groups");
                group.push(i);
            }
        }
        ensure!(!group.is_empty(), "empty group in {spec:?}");
        groups.push(group);
    }
    ensure!(
        groups.len() >= 2,
        "a partition needs at least two groups, like \"0-4|5-9\""
    );
    let missing: Vec<usize> = (0..nodes).filter(|i| !seen.contains(i)).collect();
    ensure!(missing.is_empty(), "nodes {missing:?} are in no group");
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::{lock_free, parse_groups, stamp_of};

    #[test]
    fn log_lines_are_stamped_in_text_and_json_and_continuations_have_none() {
        assert_eq!(
            stamp_of("2026-11-26T10:00:00.000001Z  INFO overlay: listening"),
            Some("2026-11-26T10:00:00.000001Z")
        );
        assert_eq!(
            stamp_of(r#"{"timestamp":"2026-11-26T10:00:01.5Z","level":"INFO"}"#),
            Some("2026-11-26T10:00:01.5Z")
        );
        assert_eq!(stamp_of("   0: std::panicking::begin_panic"), None);
        assert_eq!(stamp_of(""), None);
    }

    #[test]
    fn a_held_data_dir_lock_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        assert!(lock_free(dir.path()), "no lock file yet");
        let lock = lattice_node::lock::DataDirLock::acquire(dir.path()).unwrap();
        assert!(!lock_free(dir.path()));
        drop(lock);
        assert!(lock_free(dir.path()));
    }

    #[test]
    fn groups_parse_and_bad_specs_are_refused() {
        assert_eq!(parse_groups("0-1|2", 3).unwrap(), vec![vec![0, 1], vec![2]]);
        assert_eq!(parse_groups("0,2|1", 3).unwrap(), vec![vec![0, 2], vec![1]]);
        for bad in ["0-2", "0-1|1-2", "0|5", "0|", "a|b", "2-1|0", "0|1"] {
            assert!(parse_groups(bad, 3).is_err(), "{bad} was accepted");
        }
    }
}
