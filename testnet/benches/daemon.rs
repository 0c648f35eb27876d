//! Daemon figures for docs/benchmarks.md: time from start to a ready control socket,
//! `status` round trips through the socket (p50/p99 over 1,000 calls), and the idle memory
//! (RSS, PSS, anonymous) of a daemon after 30 s with the DHT, gossipsub, mDNS and UPnP on,
//! for one or several binaries (`LATTICE_MEM_BINS`, e.g. the release and `iot` builds).
//!
//! Build the release binary first, then run:
//! `cargo build --release && cargo bench -p lattice-testnet --bench daemon`
//! (`LATTICE_BIN` overrides the binary). The idle daemon runs in a fresh network namespace
//! (`unshare -n`, as root) holding only loopback, so its mDNS and UPnP traffic stays on this
//! machine; without root it runs with mDNS and UPnP off and says so.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lattice_node::control::api::{method, NoParams, Status};
use lattice_node::control::Client;
use lattice_testnet::bench::{binary, percentile};
use lattice_testnet::daemon::{wait_for, Daemon};

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

    idle_memory(&bin, &tmp.join("idle"))?;
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lattice-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Resident memory of a process from `/proc/PID/smaps_rollup`, in KiB: everything
/// mapped in (`Rss`), the process's share of pages it shares with others (`Pss`), and
/// memory it allocated itself (`Anonymous`).
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss: u64,
    pss: u64,
    anon: u64,
}

fn memory(pid: u32) -> Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .with_context(|| format!("no {name} in smaps_rollup"))?
            .parse()
            .map_err(Into::into)
    };
    Ok(Memory {
        rss: field("Rss:")?,
        pss: field("Pss:")?,
        anon: field("Anonymous:")?,
    })
}

/// Starts an idle daemon of `bin` in `dir`: as root in a network namespace of its own
/// holding only loopback (so mDNS and UPnP stay on this machine), listening on its
/// defaults; otherwise on 127.0.0.1 TCP with mDNS and UPnP off.
fn idle_daemon(bin: &str, dir: &std::path::Path, root: bool) -> Result<Child> {
    std::fs::create_dir_all(dir)?;
    // `bin` may carry daemon arguments after the path: "target/iot/lattice --profile small".
    let (path, args) = bin.split_once(' ').unwrap_or((bin, ""));
    let daemon = format!(
        "{path} daemon --data-dir {} --socket {} {args}",
        dir.join("data").display(),
        dir.join("lattice.sock").display()
    );
    let child = if root {
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
            .args([
                "-c",
                &format!("exec {daemon} --listen /ip4/127.0.0.1/tcp/0 --no-mdns --no-upnp"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?
    };
    Ok(child)
}

/// Idle memory of every binary in `LATTICE_MEM_BINS` (comma-separated, each a path and
/// perhaps daemon arguments; default the one benchmarked), each measured after
/// `LATTICE_MEM_SECS` (default 30), in turn, `LATTICE_MEM_ROUNDS` times (default 3): the
/// binaries are compared within each round, as this machine's load varies.
fn idle_memory(default_bin: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    let bins: Vec<String> = match std::env::var("LATTICE_MEM_BINS") {
        Ok(list) => list.split(',').map(|b| b.trim().to_owned()).collect(),
        Err(_) => vec![default_bin.display().to_string()],
    };
    let rounds: usize = std::env::var("LATTICE_MEM_ROUNDS")
        .map_or(Ok(3), |r| r.parse())
        .context("LATTICE_MEM_ROUNDS")?;
    let secs: u64 = std::env::var("LATTICE_MEM_SECS")
        .map_or(Ok(30), |r| r.parse())
        .context("LATTICE_MEM_SECS")?;
    let root = nix::unistd::geteuid().is_root();
    let mut seen: Vec<Vec<Memory>> = vec![Vec::new(); bins.len()];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // One at a time: two daemons of one binary share its code pages, which then stay
    // resident in both.
    for round in 0..rounds {
        for (i, bin) in bins.iter().enumerate() {
            let d = dir.join(format!("idle-{round}-{i}"));
            let mut child = idle_daemon(bin, &d, root)?;
            let socket = d.join("lattice.sock");
            let ready = wait_for(
                "the idle daemon",
                Duration::from_secs(30),
                Duration::from_millis(50),
                || Ok(rt.block_on(Client::connect(&socket)).ok().map(|_| ())),
            );
            if ready.is_ok() {
                std::thread::sleep(Duration::from_secs(secs));
            }
            let measured = ready.and_then(|()| memory(child.id()));
            let _ = child.kill();
            let _ = child.wait();
            seen[i].push(measured?);
        }
    }
    let what = if root {
        "DHT, gossipsub, mDNS and UPnP (if built) on"
    } else {
        "DHT and gossipsub on; mDNS and UPnP off (not root)"
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (bin, ms) in bins.iter().zip(&seen) {
        // Median (lowest-highest) over the rounds.
        let spread = |f: fn(&Memory) -> u64| {
            let mut v: Vec<u64> = ms.iter().map(f).collect();
            v.sort();
            format!(
                "{:.1} MiB ({:.1}-{:.1})",
                mib(v[v.len() / 2]),
                mib(v[0]),
                mib(v[v.len() - 1])
            )
        };
        let path = bin.split(' ').next().unwrap_or(bin);
        let size = std::fs::metadata(path)?.len();
        println!(
            "{bin}: binary {:.1} MB; idle after {secs} s ({what}), median of {rounds}: RSS {}, PSS {}, anonymous {}",
            size as f64 / 1e6,
            spread(|m| m.rss),
            spread(|m| m.pss),
            spread(|m| m.anon),
        );
    }
    Ok(())
}
