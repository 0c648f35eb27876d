//! Daemon figures for docs/benchmarks.md: time from start to a ready control socket,
//! `status` round trips through the socket (p50/p99 over 1,000 calls), and the idle RSS of
//! one daemon after 30 s with the DHT, gossipsub, mDNS and UPnP on.
//!
//! Build the release binary first, then run:
//! `cargo build --release && cargo bench -p lattice-testnet --bench daemon`
//! (`LATTICE_BIN` overrides the binary). The idle daemon runs in a fresh network namespace
//! (`unshare -n`, as root) holding only loopback, so its mDNS and UPnP traffic stays on this
//! machine; without root it runs with mDNS and UPnP off and says so.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lattice_node::control::api::{method, NoParams, Status};
use lattice_node::control::Client;
use lattice_testnet::bench::{binary, percentile};
use lattice_testnet::daemon::{wait_for, Daemon};

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too. Only run for real
    // under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let bin = binary()?;
    let tmp = tempfile_dir()?;

    let mut ready = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let d = Daemon::start(&bin, &tmp.join(format!("ready{i}")), &[])?;
        ready.push(t.elapsed());
        drop(d);
    }
    ready.sort();
    println!(
        "start to socket ready: median {:?} (min {:?}, max {:?}, 5 runs)",
        ready[2], ready[0], ready[4]
    );

    let d = Daemon::start(&bin, &tmp.join("rtt"), &[])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut times = rt.block_on(async {
        let mut c = Client::connect(&d.socket).await?;
        let mut times = Vec::with_capacity(1_000);
        for _ in 0..1_000 {
            let t = Instant::now();
            let _: Status = c.call::<method::Status>(&NoParams).await?;
            times.push(t.elapsed());
        }
        anyhow::Ok(times)
    })?;
    times.sort();
    println!(
        "status round trip over the control socket: p50 {:?}, p99 {:?} (1,000 calls, one connection)",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    drop(d);

    idle_rss(&bin, &tmp.join("idle"))?;
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lattice-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn idle_rss(bin: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let socket = dir.join("lattice.sock");
    let root = nix::unistd::geteuid().is_root();
    let daemon = format!(
        "{} daemon --data-dir {} --socket {} --listen /ip4/127.0.0.1/tcp/0 --listen /ip4/127.0.0.1/udp/0/quic-v1",
        bin.display(),
        dir.join("data").display(),
        socket.display()
    );
    let mut child = if root {
        // A private network namespace with only loopback: mDNS and UPnP stay on this machine.
        Command::new("unshare")
            .args([
                "-n",
                "sh",
                "-c",
                &format!("ip link set lo up && exec {daemon}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?
    } else {
        Command::new("sh")
            .args(["-c", &format!("exec {daemon} --no-mdns --no-upnp")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ready = wait_for(
        "the idle daemon",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || Ok(rt.block_on(Client::connect(&socket)).ok().map(|_| ())),
    );
    if let Err(e) = ready {
        let _ = child.kill();
        return Err(e);
    }
    std::thread::sleep(Duration::from_secs(30));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let rss = rss?;
    let what = if root {
        "DHT, gossipsub, mDNS and UPnP on"
    } else {
        "DHT and gossipsub on; mDNS and UPnP off (not root)"
    };
    println!(
        "idle RSS after 30 s ({what}): {} KiB = {:.1} MiB",
        rss,
        rss as f64 / 1024.0
    );
    Ok(())
}
