//! History figures for docs/benchmarks.md (issue #18), on release daemons over 127.0.0.1:
//!
//! - one key overwritten `LATTICE_BENCH_OVERWRITES` times (default 100,000) with 4 KB
//!   values, by 8 clients on each of 3 nodes at once: while writing and once settled,
//!   each node's history (`doc info` log bytes), its database file and its RSS (current
//!   and peak), against the document's content;
//! - a 10,000-key document given `LATTICE_BENCH_KEY_OVERWRITES` overwrites (default
//!   1,000,000; 16 clients on one node, small values), replicated on a second node: the
//!   history and database sizes, then the time a new replica takes to catch up (from its
//!   `doc join` to the same digest).
//!
//! `cargo build --release && cargo bench -p lattice-testnet --bench compaction`
//! (`LATTICE_BIN` overrides the binary: point it at an older build for "before" figures;
//! a binary without compaction reports no history bytes).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lattice_node::control::api::{self, method};
use lattice_node::control::Client;
use lattice_testnet::bench::binary;
use lattice_testnet::daemon::{wait_for, Daemon};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(300);

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let bin = binary()?;
    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let env = |name: &str, default: usize| -> Result<usize> {
        std::env::var(name)
            .ok()
            .map_or(Ok(default), |v| v.parse().context(name.to_owned()))
    };
    one_key(
        &bin,
        &tmp.path().join("one-key"),
        &rt,
        env("LATTICE_BENCH_OVERWRITES", 100_000)?,
    )?;
    many_keys(
        &bin,
        &tmp.path().join("many-keys"),
        &rt,
        env("LATTICE_BENCH_KEY_OVERWRITES", 1_000_000)?,
    )
}

/// `n` daemons, all bootstrapping from the first.
fn start(bin: &Path, dir: &Path, n: usize) -> Result<Vec<Daemon>> {
    let first = Daemon::start(bin, &dir.join("n0"), &[])?;
    let boot = first.addr()?;
    let mut nodes = vec![first];
    for i in 1..n {
        let args = vec!["--bootstrap".to_owned(), boot.clone()];
        nodes.push(Daemon::start(bin, &dir.join(format!("n{i}")), &args)?);
    }
    Ok(nodes)
}

fn join(d: &Daemon, doc: &str) -> Result<()> {
    wait_for("a join", SETTLE, Duration::from_millis(200), || {
        Ok(d.json(&["doc", "join", doc]).ok().map(|_| ()))
    })
}

/// What one node holds and costs: (history bytes, content bytes, database file bytes,
/// RSS, peak RSS).
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    log: u64,
    state: u64,
    file: u64,
    rss: u64,
    peak: u64,
}

fn kib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "history {} ({} B), content {} B, database file {}, RSS {} (peak {})",
            kib(self.log),
            self.log,
            self.state,
            kib(self.file),
            kib(self.rss),
            kib(self.peak)
        )
    }
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn sample(d: &Daemon, doc: &str) -> Result<Sample> {
    let info = d.json(&["doc", "info", doc])?;
    let (rss, peak) = d.pid().map_or((0, 0), rss);
    Ok(Sample {
        log: info["log_bytes"].as_u64().unwrap_or(0),
        state: info["state_bytes"].as_u64().unwrap_or(0),
        file: std::fs::metadata(d.data_dir.join("lattice.redb"))
            .map(|m| m.len())
            .unwrap_or(0),
        rss,
        peak,
    })
}

fn digest(d: &Daemon, doc: &str) -> Result<Value> {
    Ok(d.json(&["doc", "info", doc])?["digest"].clone())
}

/// Waits until every node has one digest and its history stops shrinking (three samples
/// 10 s apart, a compaction period, with no change); returns the last samples.
fn settle(nodes: &[Daemon], doc: &str) -> Result<Vec<Sample>> {
    let started = Instant::now();
    wait_for("convergence", SETTLE, Duration::from_millis(200), || {
        let d0 = digest(&nodes[0], doc)?;
        let same = nodes[1..]
            .iter()
            .map(|n| digest(n, doc))
            .collect::<Result<Vec<_>>>()?
            .iter()
            .all(|d| *d == d0);
        Ok(same.then_some(()))
    })?;
    println!(
        "  converged {:.1} s after the last write",
        started.elapsed().as_secs_f64()
    );
    let mut last: Vec<u64> = Vec::new();
    let mut steady = 0;
    loop {
        let samples = nodes
            .iter()
            .map(|n| sample(n, doc))
            .collect::<Result<Vec<_>>>()?;
        let logs: Vec<u64> = samples.iter().map(|s| s.log).collect();
        steady = if logs == last { steady + 1 } else { 0 };
        if steady >= 2 || started.elapsed() > SETTLE {
            println!(
                "  history steady {:.0} s after the last write",
                started.elapsed().as_secs_f64()
            );
            return Ok(samples);
        }
        last = logs;
        std::thread::sleep(Duration::from_secs(10));
    }
}

/// Writes `total` overwrites through `clients` connections to each of `nodes` at once;
/// `write(i)` gives the i-th write's key and value.
async fn overwrite(
    nodes: &[&Path],
    doc: &str,
    clients: usize,
    total: usize,
    write: fn(usize) -> (String, String),
) -> Result<()> {
    let mut set = tokio::task::JoinSet::new();
    let lanes = nodes.len() * clients;
    for lane in 0..lanes {
        let socket = nodes[lane % nodes.len()].to_owned();
        let doc = doc.to_owned();
        set.spawn(async move {
            let mut c = Client::connect(&socket).await?;
            for i in (lane..total).step_by(lanes) {
                let (key, value) = write(i);
                c.call::<method::DocSet>(&api::SetParams {
                    doc: doc.clone(),
                    key,
                    value,
                })
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// Samples every node every second until `done`; returns each node's largest history
/// and database file seen.
fn watch(nodes: &[Daemon], doc: &str, done: &AtomicBool, peaks: &Mutex<Vec<Sample>>) -> Result<()> {
    while !done.load(Ordering::Relaxed) {
        for (i, n) in nodes.iter().enumerate() {
            let s = sample(n, doc)?;
            let mut p = peaks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            p[i].log = p[i].log.max(s.log);
            p[i].file = p[i].file.max(s.file);
            p[i].peak = p[i].peak.max(s.peak);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

fn one_key(bin: &Path, dir: &Path, rt: &tokio::runtime::Runtime, total: usize) -> Result<()> {
    println!("one key overwritten {total} times with 4 KB values, 8 clients on each of 3 nodes");
    let nodes = start(bin, dir, 3)?;
    let doc = nodes[0].json(&["doc", "create", "sensor", "--open"])?["doc"]
        .as_str()
        .context("no doc id")?
        .to_owned();
    for n in &nodes[1..] {
        join(n, &doc)?;
    }
    let sockets: Vec<&Path> = nodes.iter().map(|n| n.socket.as_path()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let peaks = Mutex::new(vec![Sample::default(); nodes.len()]);
    let t = Instant::now();
    let written = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch(&nodes, &doc, &done, &peaks));
        let r = rt.block_on(overwrite(&sockets, &doc, 8, total, |i| {
            ("k".to_owned(), format!("\"{i:08}{}\"", "v".repeat(4_086)))
        }));
        done.store(true, Ordering::Relaxed);
        let w = watcher.join();
        r.and_then(|()| w.map_err(|_| anyhow::anyhow!("watcher panicked"))?)
    });
    written?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  {total} writes in {secs:.1} s ({:.0} writes/s, {:.1} MB/s of values)",
        total as f64 / secs,
        total as f64 * 4_096.0 / secs / 1e6
    );
    let peaks = peaks
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let settled = settle(&nodes, &doc)?;
    for (i, (s, p)) in settled.iter().zip(&peaks).enumerate() {
        println!("  node {i} settled: {s}");
        println!(
            "  node {i} while writing: largest history {}, largest database file {}",
            kib(p.log),
            kib(p.file)
        );
    }
    Ok(())
}

fn many_keys(bin: &Path, dir: &Path, rt: &tokio::runtime::Runtime, total: usize) -> Result<()> {
    println!("10,000 keys, {total} overwrites of small values, 16 clients on node 0 of 2");
    let mut nodes = start(bin, dir, 2)?;
    let doc = nodes[0].json(&["doc", "create", "table", "--open"])?["doc"]
        .as_str()
        .context("no doc id")?
        .to_owned();
    join(&nodes[1], &doc)?;
    let t = Instant::now();
    rt.block_on(overwrite(
        &[nodes[0].socket.as_path()],
        &doc,
        16,
        total,
        |i| (format!("key{:05}", i % 10_000), format!("{i}")),
    ))?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  {total} writes in {secs:.1} s ({:.0} writes/s)",
        total as f64 / secs
    );
    let settled = settle(&nodes, &doc)?;
    for (i, s) in settled.iter().enumerate() {
        println!("  node {i} settled: {s}");
    }
    // A new replica joins and catches up.
    let boot = nodes[0].addr()?;
    let args = vec!["--bootstrap".to_owned(), boot];
    let late = Daemon::start(bin, &dir.join("late"), &args)?;
    let want = digest(&nodes[0], &doc)?;
    let t = Instant::now();
    join(&late, &doc)?;
    wait_for("the new replica", SETTLE, Duration::from_millis(50), || {
        Ok((digest(&late, &doc)? == want).then_some(()))
    })?;
    println!(
        "  a new replica caught up in {:.2} s (join to same digest): {}",
        t.elapsed().as_secs_f64(),
        sample(&late, &doc)?
    );
    nodes.push(late);
    Ok(())
}
