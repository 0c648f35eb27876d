//! Helpers for the benchmark binaries (`testnet/benches/`): which `lattice` binary to
//! measure, percentiles, reading a daemon's Prometheus metrics, and the time a write
//! takes to reach every replica.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lattice_node::control::api::{self, method};
use lattice_node::control::Client;
use tokio::sync::mpsc;

/// The release binary (`LATTICE_BIN` overrides it).
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LATTICE_BIN") {
        return Ok(p.into());
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/lattice");
    if !p.exists() {
        bail!(
            "{} not found: run `cargo build --release` first (or set LATTICE_BIN)",
            p.display()
        );
    }
    Ok(p)
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A loopback address with a port that was free a moment ago, for `--metrics`.
pub fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The sum of every sample of metric `name` whose labels contain `labels` (e.g.
/// `path="repair"`), from the daemon's `/metrics` at `addr`.
pub fn metric(addr: SocketAddr, name: &str, labels: &str) -> Result<f64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let mut total = 0.0;
    for line in body.lines().filter(|l| l.starts_with(name)) {
        if !line.contains(labels) {
            continue;
        }
        let v = line
            .rsplit(' ')
            .next()
            .context("metric line without a value")?;
        total += v
            .parse::<f64>()
            .with_context(|| format!("bad metric line {line:?}"))?;
    }
    Ok(total)
}

/// Write-to-all latencies: from the start of a `doc.set` until every watcher has seen it.
pub struct WriteToAll {
    pub p50: Duration,
    pub p99: Duration,
    /// The writer's own durable acknowledgement.
    pub ack_p50: Duration,
}

/// `writes` writes of key "k" in `doc` through the daemon at `writer`, one at a time, each
/// timed until the daemons at `watchers` have all reported it through `doc.watch`.
pub async fn write_to_all(
    writer: &Path,
    watchers: &[&Path],
    doc: &str,
    writes: usize,
    limit: Duration,
) -> Result<WriteToAll> {
    // One watcher per other node; each reports the values of "k" it sees.
    let (tx, mut rx) = mpsc::channel::<i64>(4 * writes * watchers.len().max(1));
    for socket in watchers {
        let mut c = Client::connect(socket).await?;
        let id = c
            .stream::<method::DocWatch>(&api::DocParams {
                doc: doc.to_owned(),
            })
            .await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(change)) = c.next_event(&id).await {
                if let Some(v) = change.changes.get("k").and_then(|v| v.as_i64()) {
                    if tx.send(v).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let mut w = Client::connect(writer).await?;
    let (mut all, mut acks) = (Vec::new(), Vec::new());
    for i in 0..writes as i64 {
        let t = Instant::now();
        let p = api::SetParams {
            doc: doc.to_owned(),
            key: "k".into(),
            value: i.to_string(),
        };
        w.call::<method::DocSet>(&p).await?;
        acks.push(t.elapsed());
        let mut seen = 0;
        while seen < watchers.len() {
            match tokio::time::timeout(limit, rx.recv()).await {
                Ok(Some(v)) if v == i => seen += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => bail!("write {i} did not reach every replica"),
            }
        }
        all.push(t.elapsed());
    }
    all.sort();
    acks.sort();
    Ok(WriteToAll {
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        ack_p50: percentile(&acks, 0.5),
    })
}
