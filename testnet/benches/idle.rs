//! What idle documents cost, for docs/benchmarks.md: `LATTICE_BENCH_NODES` daemons
//! (default 10) all hosting the same documents (`LATTICE_BENCH_DOCS`, default 100 and
//! 1,000), left idle for `LATTICE_IDLE_SECS` (default 60) once every node holds every
//! document. Per node: bytes per second on the wire, sent and received
//! (`libp2p_bandwidth_bytes_total`), and CPU (user + system time from /proc), as the
//! median and the maximum over the nodes. Then 100 writes to one of the documents, each
//! timed until every other node has seen it (compare `LATTICE_BENCH_DOCS=1`).
//!
//! `cargo build --release && cargo bench -p lattice-testnet --bench idle`
//! (`LATTICE_BIN` overrides the binary).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lattice_node::control::api::{self, method};
use lattice_node::control::Client;
use lattice_testnet::bench::{binary, free_addr, metric, write_to_all};
use lattice_testnet::daemon::{wait_for, Daemon};

/// Joins in flight per joining node.
const JOINERS: usize = 8;
/// Writes timed to all replicas after the idle window.
const WRITES: usize = 100;
const LIMIT: Duration = Duration::from_secs(600);

fn env_list(name: &str, default: &str) -> Result<Vec<usize>> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|n| n.trim().parse().with_context(|| format!("{name}={n}")))
        .collect()
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let bin = binary()?;
    let nodes = env_list("LATTICE_BENCH_NODES", "10")?[0];
    let idle = Duration::from_secs(env_list("LATTICE_IDLE_SECS", "60")?[0] as u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for docs in env_list("LATTICE_BENCH_DOCS", "100,1000")? {
        let tmp = tempfile::tempdir()?;
        let mut net = Net::start(&bin, tmp.path(), nodes)?;
        let t = Instant::now();
        net.first_doc = rt.block_on(share(&net.daemons, docs))?;
        println!(
            "{nodes} nodes, {docs} documents: every node holds every document after {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // Joins leave work behind (first anti-entropy rounds, announcements): let it pass.
        std::thread::sleep(Duration::from_secs(10));
        let before = net.sample()?;
        std::thread::sleep(idle);
        let after = net.sample()?;
        let secs = idle.as_secs_f64();
        let mut sent: Vec<f64> = Vec::new();
        let mut received: Vec<f64> = Vec::new();
        let mut cpu: Vec<f64> = Vec::new();
        for (b, a) in before.iter().zip(&after) {
            sent.push((a.sent - b.sent) / secs);
            received.push((a.received - b.received) / secs);
            cpu.push(100.0 * (a.cpu - b.cpu) / secs);
        }
        println!(
            "  idle {secs:.0} s, per node: sent {} B/s, received {} B/s, CPU {} % of a core",
            spread(&mut sent, 0),
            spread(&mut received, 0),
            spread(&mut cpu, 2),
        );
        // Then one document is written to, among all the idle ones.
        let watchers: Vec<&Path> = net.daemons[1..]
            .iter()
            .map(|d| d.socket.as_path())
            .collect();
        let w = rt.block_on(write_to_all(
            &net.daemons[0].socket,
            &watchers,
            &net.first_doc,
            WRITES,
            LIMIT,
        ))?;
        println!(
            "  {WRITES} writes to one of them, to all {} replicas: p50 {:?}, p99 {:?}",
            nodes - 1,
            w.p50,
            w.p99
        );
    }
    Ok(())
}

/// "median (max)".
fn spread(v: &mut [f64], decimals: usize) -> String {
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    let max = v[v.len() - 1];
    format!("{median:.decimals$} (max {max:.decimals$})")
}

struct Net {
    daemons: Vec<Daemon>,
    metrics: Vec<SocketAddr>,
    /// The document the write latency is measured in.
    first_doc: String,
}

struct Sample {
    sent: f64,
    received: f64,
    /// Seconds of CPU, user and system.
    cpu: f64,
}

impl Net {
    /// `n` daemons serving metrics, all bootstrapping from the first.
    fn start(bin: &Path, dir: &Path, n: usize) -> Result<Net> {
        let mut daemons: Vec<Daemon> = Vec::new();
        let mut metrics = Vec::new();
        for i in 0..n {
            let addr = free_addr()?;
            let mut args = vec!["--metrics".to_owned(), addr.to_string()];
            if let Some(first) = daemons.first() {
                args.extend(["--bootstrap".to_owned(), first.addr()?]);
            }
            daemons.push(Daemon::start(bin, &dir.join(format!("n{i}")), &args)?);
            metrics.push(addr);
        }
        Ok(Net {
            daemons,
            metrics,
            first_doc: String::new(),
        })
    }

    fn sample(&self) -> Result<Vec<Sample>> {
        let ticks =
            nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("no CLK_TCK")? as f64;
        let mut out = Vec::new();
        for (d, m) in self.daemons.iter().zip(&self.metrics) {
            let bytes = |dir: &str| {
                metric(
                    *m,
                    "libp2p_bandwidth_bytes_total",
                    &format!("direction=\"{dir}\""),
                )
            };
            let pid = d.pid().context("daemon without a pid")?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            // Fields after the command name (which may hold spaces): utime is the 12th.
            let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f[11].parse()?;
            let stime: f64 = f[12].parse()?;
            out.push(Sample {
                sent: bytes("Outbound")?,
                received: bytes("Inbound")?,
                cpu: (utime + stime) / ticks,
            });
        }
        Ok(out)
    }
}

/// Creates `docs` open documents on the first daemon and joins every one on the others;
/// returns the first one's id.
async fn share(daemons: &[Daemon], docs: usize) -> Result<String> {
    let mut first = Client::connect(&daemons[0].socket).await?;
    let mut ids = Vec::with_capacity(docs);
    for i in 0..docs {
        let p = api::CreateParams {
            name: format!("idle-{i}"),
            open: true,
            writers: Vec::new(),
        };
        ids.push(first.call::<method::DocCreate>(&p).await?.doc);
    }
    let mut joins = tokio::task::JoinSet::new();
    for d in &daemons[1..] {
        for part in 0..JOINERS {
            let socket = d.socket.clone();
            let mine: Vec<String> = ids.iter().skip(part).step_by(JOINERS).cloned().collect();
            joins.spawn(async move {
                let mut c = Client::connect(&socket).await?;
                for doc in mine {
                    let p = api::DocParams { doc: doc.clone() };
                    let start = Instant::now();
                    // A join fails while the document's providers are not found yet.
                    loop {
                        match c.call::<method::DocJoin>(&p).await {
                            Ok(_) => break,
                            Err(e) if start.elapsed() > LIMIT => {
                                bail!("joining {doc}: {e}")
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                        }
                    }
                }
                anyhow::Ok(())
            });
        }
    }
    while let Some(r) = joins.join_next().await {
        r??;
    }
    for d in daemons {
        wait_for("every document", LIMIT, Duration::from_secs(1), || {
            let n = d.json(&["doc", "ls"])?.as_array().map_or(0, Vec::len);
            Ok((n == docs).then_some(()))
        })?;
    }
    ids.into_iter().next().context("no document")
}
