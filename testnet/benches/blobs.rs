//! Blob figures for docs/benchmarks.md: fetch throughput of one blob between two daemons
//! on loopback, and the bytes on the wire (loopback's received bytes while the fetch runs,
//! TCP/IP headers included) divided by the blob's size. Run
//! `cargo bench -p lattice-overlay --bench substream` in the same session for the raw
//! libp2p baseline and the BLAKE3 hash speed.
//!
//! `cargo build --release && cargo bench -p lattice-testnet --bench blobs`
//! (`LATTICE_BENCH_MIB` sets the size, default 1024; nothing else should use loopback).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lattice_testnet::bench::binary;
use lattice_testnet::daemon::{wait_for, Daemon};

fn loopback_rx_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/net/dev")?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .context("no loopback interface")?;
    let fields: Vec<&str> = line
        .split(':')
        .nth(1)
        .context("bad line")?
        .split_whitespace()
        .collect();
    Ok(fields[0].parse()?)
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let mib: usize = std::env::var("LATTICE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let bin = binary()?;
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("blob");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut xof = blake3::Hasher::new().update(b"bench").finalize_xof();
        let mut buf = vec![0u8; 16 << 20];
        for _ in 0..mib.div_ceil(16) {
            xof.fill(&mut buf);
            f.write_all(&buf)?;
        }
    }
    let size = std::fs::metadata(&path)?.len();
    let a = Daemon::start(&bin, &tmp.path().join("a"), &[])?;
    let b = Daemon::start(
        &bin,
        &tmp.path().join("b"),
        &["--bootstrap".into(), a.addr()?],
    )?;

    let t = Instant::now();
    let added = a.json(&["blob", "add", path.to_str().context("path")?])?;
    let add_secs = t.elapsed().as_secs_f64();
    let hash = added["hash"].as_str().context("hash")?.to_owned();
    println!(
        "blob add, {mib} MiB: {add_secs:.2} s ({:.0} MB/s: copy, hash and tree in one pass)",
        size as f64 / add_secs / 1e6
    );
    wait_for(
        "B to see the provider",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let ps = b.json(&["blob", "providers", &hash])?;
            Ok(ps.as_array().is_some_and(|p| !p.is_empty()).then_some(()))
        },
    )?;
    let rx0 = loopback_rx_bytes()?;
    let t = Instant::now();
    let done = b.json(&["blob", "get", &hash])?;
    let secs = t.elapsed().as_secs_f64();
    let wire = loopback_rx_bytes()? - rx0;
    let received = done["done"]["received"].as_f64().context("no report")?;
    println!(
        "blob get, {mib} MiB, one provider: {secs:.2} s = {:.0} MB/s; on the wire {:.4} × size \
         (loopback bytes incl. TCP/IP headers, requests and CLI traffic); ranges and proofs {:.4} × size",
        size as f64 / secs / 1e6,
        wire as f64 / size as f64,
        received / size as f64
    );
    Ok(())
}
