//! Document figures for docs/benchmarks.md:
//!
//! - write-to-all-replicas latency on 5 and 20 daemons: from the start of a `doc.set` on
//!   node 0 until every other node's `doc.watch` has reported the new value (p50/p99 over
//!   200 writes, one at a time);
//! - anti-entropy bytes to repair 10 missing writes in a document of 10,000 keys, against
//!   the bytes of those 10 deltas on gossip (from the daemons' `lattice_sync_bytes_sent`
//!   metric, split by path).
//!
//! `cargo build --release && cargo bench -p lattice-testnet --bench docs`
//! (`LATTICE_BIN` overrides the binary; `LATTICE_BENCH_NODES=5,20` the sizes).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lattice_node::control::api::{self, method};
use lattice_node::control::Client;
use lattice_testnet::bench::{binary, free_addr, metric, write_to_all};
use lattice_testnet::daemon::{wait_for, Daemon};

const WRITES: usize = 200;
const LIMIT: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let bin = binary()?;
    let tmp = tempfile::tempdir()?;
    let sizes = std::env::var("LATTICE_BENCH_NODES").unwrap_or_else(|_| "5,20".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for n in sizes.split(',') {
        let n: usize = n.trim().parse().context("LATTICE_BENCH_NODES")?;
        let nodes = start(&bin, &tmp.path().join(format!("lat{n}")), n, &[])?;
        let (p50, p99, ack) = rt.block_on(latency(&nodes))?;
        println!(
            "write to all {} replicas ({n} nodes, {WRITES} writes): p50 {p50:?}, p99 {p99:?} (local durable ack p50 {ack:?})",
            n - 1
        );
    }
    repair(&bin, &tmp.path().join("repair"), &rt)
}

/// `n` daemons (all bootstrapping from the first) with `args`.
fn start(bin: &Path, dir: &Path, n: usize, args: &[Vec<String>]) -> Result<Vec<Daemon>> {
    let extra = |i: usize| args.get(i).cloned().unwrap_or_default();
    let first = Daemon::start(bin, &dir.join("n0"), &extra(0))?;
    let boot = first.addr()?;
    let mut nodes = vec![first];
    for i in 1..n {
        let mut a = vec!["--bootstrap".to_owned(), boot.clone()];
        a.extend(extra(i));
        nodes.push(Daemon::start(bin, &dir.join(format!("n{i}")), &a)?);
    }
    Ok(nodes)
}

/// Creates an open document on node 0 and joins it everywhere else; returns its id.
fn shared_doc(nodes: &[Daemon]) -> Result<String> {
    let doc = nodes[0].json(&["doc", "create", "bench", "--open"])?["doc"]
        .as_str()
        .context("no doc id")?
        .to_owned();
    for d in &nodes[1..] {
        wait_for("a join", LIMIT, Duration::from_millis(200), || {
            Ok(d.json(&["doc", "join", &doc]).ok().map(|_| ()))
        })?;
    }
    Ok(doc)
}

async fn latency(nodes: &[Daemon]) -> Result<(Duration, Duration, Duration)> {
    let doc = shared_doc(nodes)?;
    let watchers: Vec<&Path> = nodes[1..].iter().map(|d| d.socket.as_path()).collect();
    let w = write_to_all(&nodes[0].socket, &watchers, &doc, WRITES, LIMIT).await?;
    Ok((w.p50, w.p99, w.ack_p50))
}

fn repair(bin: &Path, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<()> {
    let metrics = [free_addr()?, free_addr()?];
    let args: Vec<Vec<String>> = metrics
        .iter()
        .map(|m| vec!["--metrics".to_owned(), m.to_string()])
        .collect();
    let nodes = start(bin, dir, 2, &args)?;
    let doc = shared_doc(&nodes)?;
    let t = Instant::now();
    rt.block_on(write_keys(&nodes[0], &doc))?;
    println!("10,000 writes by 16 clients: {:?}", t.elapsed());
    converge(&nodes, &doc)?;

    // Node 1 goes away; node 0 writes 10 more; node 1 comes back and is repaired.
    let a_id = nodes[0].peer_id()?;
    nodes[1].json(&["net", "block", &a_id])?;
    wait_for(
        "the nodes to disconnect",
        LIMIT,
        Duration::from_millis(100),
        || {
            let peers = nodes[0].json(&["peers"])?;
            let connected = peers
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["connected"] == true);
            Ok((!connected).then_some(()))
        },
    )?;
    let bytes = |path: &str| -> Result<f64> {
        let label = format!("path=\"{path}\"");
        Ok(metric(metrics[0], "lattice_sync_bytes_sent", &label)?
            + metric(metrics[1], "lattice_sync_bytes_sent", &label)?)
    };
    let gossip0 = bytes("gossip")?;
    for k in 0..10 {
        nodes[0].json(&["doc", "set", &doc, &format!("new{k}"), &k.to_string()])?;
    }
    let deltas = bytes("gossip")? - gossip0;
    let repair0 = bytes("repair")?;
    nodes[1].json(&["net", "unblock", &a_id])?;
    nodes[1].json(&["dial", &nodes[0].addr()?])?;
    converge(&nodes, &doc)?;
    let repaired = bytes("repair")? - repair0;
    println!(
        "repair of 10 missing writes in a 10,000-key document: {repaired} B by anti-entropy \
         (both directions) vs {deltas} B for the 10 deltas on gossip: ratio {:.2}, \
         overhead {} B (goal: ratio <= 2 + 1 KiB)",
        repaired / deltas,
        repaired - deltas
    );
    Ok(())
}

fn converge(nodes: &[Daemon], doc: &str) -> Result<()> {
    wait_for("convergence", LIMIT, Duration::from_millis(100), || {
        let a = nodes[0].json(&["doc", "info", doc])?["digest"].clone();
        let b = nodes[1].json(&["doc", "info", doc])?["digest"].clone();
        Ok((a == b).then_some(()))
    })
}

/// Writes 10,000 keys through 16 connections at once (their commits share fsyncs).
async fn write_keys(node: &Daemon, doc: &str) -> Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (socket, doc) = (node.socket.clone(), doc.to_owned());
        set.spawn(async move {
            let mut c = Client::connect(&socket).await?;
            for k in (w..10_000).step_by(16) {
                let p = api::SetParams {
                    doc: doc.clone(),
                    key: format!("key{k:05}"),
                    value: k.to_string(),
                };
                c.call::<method::DocSet>(&p).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}
