//! Helpers for the benchmark binaries (`testnet/benches/`): which `lattice` binary to
//! measure, percentiles, and reading a daemon's Prometheus metrics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

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
