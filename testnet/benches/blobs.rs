//! Blob transfer as a user runs it, against the raw transport, interleaved round by round
//! (this machine's speed swings from minute to minute, so only figures taken side by side
//! are compared). Two release daemons on 127.0.0.1 and a pseudo-random blob held by the
//! first; each round measures, one after the other:
//!
//! - `-o`: `lattice blob get HASH -o FILE` on the second daemon, which does not hold the
//!   blob, from the CLI's start to its exit, with the file written;
//! - `store`: `lattice blob get HASH`, into the store only;
//! - `raw`: the same number of bytes over one libp2p 0.57 substream between two processes
//!   (this bench re-run as the receiver), TCP + Noise + Yamux with the daemon's settings,
//!   in 64 KiB writes: the ceiling for anything built on that transport;
//! - `sendme`: iroh's `sendme receive` of the same file (relay disabled, written to a
//!   fresh directory), when `sendme` is on the PATH.
//!
//! For `-o` and `store` it records the receiving daemon's CPU time (user + system, from
//! /proc) per GiB, and the bytes on the wire over the blob's size. Prints each round, then
//! the medians and their ratios.
//!
//! `cargo build --release && cargo bench -p lattice-testnet --bench blobs`
//! (`LATTICE_BENCH_MIB` sets the size, default 1024; `LATTICE_BENCH_ROUNDS` the rounds,
//! default 3; nothing else should use loopback meanwhile).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lattice_testnet::bench::binary;
use lattice_testnet::daemon::{wait_for, Daemon};

/// Set in the environment of the bench re-run as the raw receiver.
const RAW_RECEIVER: &str = "LATTICE_BENCH_RAW_RECEIVER";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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

/// A process's user + system CPU time so far.
fn cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

/// Writes every dirty page out, so that no measurement pays for the one before it.
fn settle() -> Result<()> {
    if !Command::new("sync").status()?.success() {
        bail!("sync failed");
    }
    Ok(())
}

/// One timed fetch by the receiving daemon.
struct Fetch {
    secs: f64,
    cpu: Duration,
    wire: u64,
}

fn fetch(b: &Daemon, hash: &str, size: u64, out: Option<&Path>) -> Result<Fetch> {
    // Fails when the blob is not held (the first round): the fetch's report tells.
    let _ = b.cli(&["blob", "rm", hash])?;
    if let Some(out) = out {
        let _ = std::fs::remove_file(out);
    }
    let pid = b.pid().context("the receiver is not running")?;
    let mut args = vec!["blob", "get", hash, "--json"];
    let out_str;
    if let Some(out) = out {
        out_str = out.to_str().context("path")?.to_owned();
        args.extend(["-o", &out_str]);
    }
    settle()?;
    let (cpu0, rx0) = (cpu(pid)?, loopback_rx_bytes()?);
    let t = Instant::now();
    let done = b.cli(&args)?;
    let secs = t.elapsed().as_secs_f64();
    let (cpu1, rx1) = (cpu(pid)?, loopback_rx_bytes()?);
    if !done.status.success() {
        bail!("blob get failed: {}", String::from_utf8_lossy(&done.stderr));
    }
    let report: serde_json::Value = serde_json::from_slice(&done.stdout)?;
    let received = report["done"]["received"].as_u64().unwrap_or(0);
    if received < size {
        bail!("the fetch received {received} bytes of {size}: was the blob still held?");
    }
    Ok(Fetch {
        secs,
        cpu: cpu1 - cpu0,
        wire: rx1 - rx0,
    })
}

/// The raw substream: this bench as a receiver process, this process as the sender.
mod raw {
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context, Result};
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};

    const PROTOCOL: StreamProtocol = StreamProtocol::new("/lattice-bench/raw/1");

    /// A swarm with the daemon's transport settings (`overlay/src/behaviour.rs`).
    fn swarm() -> Result<Swarm<libp2p_stream::Behaviour>> {
        Ok(libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build())
    }

    fn runtime() -> Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?)
    }

    /// Prints its address, reads one stream to its end, prints the byte count.
    pub fn receiver() -> Result<()> {
        runtime()?.block_on(async {
            let mut b = swarm()?;
            b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
            let addr = loop {
                if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
                    break address;
                }
            };
            let mut incoming = b.behaviour().new_control().accept(PROTOCOL)?;
            println!("ADDR {addr} {}", b.local_peer_id());
            tokio::spawn(async move {
                loop {
                    b.select_next_some().await;
                }
            });
            let (_, mut s) = incoming.next().await.context("no stream")?;
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0usize;
            loop {
                let r = s.read(&mut buf).await?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            println!("GOT {n}");
            Ok(())
        })
    }

    /// Sends `total` bytes in 64 KiB writes to a receiver process; returns the seconds
    /// from the stream's opening to the receiver's count.
    pub fn send(total: usize) -> Result<f64> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("--bench")
            .env(super::RAW_RECEIVER, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("receiver process")?;
        let mut lines = std::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = lines.next().context("receiver said nothing")??;
        let mut parts = first.split_whitespace().skip(1);
        let addr: Multiaddr = parts.next().context("no address")?.parse()?;
        let peer: PeerId = parts.next().context("no peer id")?.parse()?;
        let secs = runtime()?.block_on(async move {
            let mut a = swarm()?;
            let mut control = a.behaviour().new_control();
            a.dial(addr)?;
            tokio::spawn(async move {
                loop {
                    a.select_next_some().await;
                }
            });
            // The stream opens once the dial has connected: polled every 10 ms, 10 s at most.
            let mut stream = None;
            for _ in 0..1_000 {
                if let Ok(s) = control.open_stream(peer, PROTOCOL).await {
                    stream = Some(s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut s = stream.context("no stream to the receiver within 10 s")?;
            let started = Instant::now();
            let chunk = vec![7u8; 64 << 10];
            let mut sent = 0;
            while sent < total {
                s.write_all(&chunk).await?;
                sent += chunk.len();
            }
            s.close().await?;
            let got = tokio::task::spawn_blocking(move || lines.next())
                .await?
                .context("receiver said no count")??;
            if got != format!("GOT {sent}") {
                bail!("receiver counted {got:?}, {sent} sent");
            }
            anyhow::Ok(started.elapsed().as_secs_f64())
        })?;
        child.wait()?;
        Ok(secs)
    }
}

/// `sendme send FILE` in the background, and its ticket.
struct Sendme {
    child: std::process::Child,
    ticket: String,
}

impl Sendme {
    fn start(file: &Path, dir: &Path) -> Result<Option<Sendme>> {
        let Ok(version) = Command::new("sendme").arg("--version").output() else {
            println!("sendme: not on the PATH (`cargo install sendme`); left out");
            return Ok(None);
        };
        println!(
            "sendme: {}",
            String::from_utf8_lossy(&version.stdout).trim()
        );
        let mut child = Command::new("sendme")
            .args(["send", file.to_str().context("path")?])
            .args(["--relay", "disabled", "--ticket-type", "addresses"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child.stdout.take().context("stdout")?;
        let mut ticket = None;
        // It hashes the file first; the ticket follows "sendme receive".
        for line in std::io::BufReader::new(out).lines().take(200) {
            let line = line?;
            if let Some(t) = line.split("sendme receive ").nth(1) {
                ticket = Some(t.trim().to_owned());
                break;
            }
        }
        let Some(ticket) = ticket else {
            let _ = child.kill();
            bail!("sendme send printed no ticket");
        };
        Ok(Some(Sendme { child, ticket }))
    }

    /// Seconds for `sendme receive` into a fresh directory, to its exit.
    fn receive(&self, dir: &Path) -> Result<f64> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let t = Instant::now();
        let out = Command::new("sendme")
            .args(["receive", &self.ticket, "--relay", "disabled"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()?;
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "sendme receive failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_dir_all(dir)?;
        Ok(secs)
    }
}

impl Drop for Sendme {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    if std::env::var_os(RAW_RECEIVER).is_some() {
        return raw::receiver();
    }
    let mib = env_or("LATTICE_BENCH_MIB", 1024);
    let rounds = env_or("LATTICE_BENCH_ROUNDS", 3).max(1);
    let bin = binary()?;
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("blob.bin");
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
    let gib = size as f64 / (1u64 << 30) as f64;
    let a = Daemon::start(&bin, &tmp.path().join("a"), &[])?;
    let b = Daemon::start(
        &bin,
        &tmp.path().join("b"),
        &["--bootstrap".into(), a.addr()?],
    )?;
    let added = a.json(&["blob", "add", path.to_str().context("path")?])?;
    let hash = added["hash"].as_str().context("hash")?.to_owned();
    wait_for(
        "B to see the provider",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let ps = b.json(&["blob", "providers", &hash])?;
            Ok(ps.as_array().is_some_and(|p| !p.is_empty()).then_some(()))
        },
    )?;
    let sendme = Sendme::start(&path, tmp.path())?;
    let out = tmp.path().join("fetched.bin");
    let mb = |secs: f64| size as f64 / secs / 1e6;
    let (mut o, mut st, mut rw, mut sm) = (vec![], vec![], vec![], vec![]);
    let (mut o_cpu, mut st_cpu, mut wire) = (vec![], vec![], vec![]);
    println!("{mib} MiB blob, {rounds} rounds; MB/s (10^6 bytes), receiver CPU s/GiB");
    for round in 1..=rounds {
        let e2e = fetch(&b, &hash, size, Some(&out))?;
        if round == 1 {
            // The output is the blob (checked once: hashing a GiB takes a while).
            let got = lattice_node::blobs::files::hash_stamped(&out)?.0;
            if lattice_node::blobs::files::hex(&got) != hash {
                bail!("the output file is not the blob");
            }
        }
        // Each fetch starts with no copy of the blob on the receiver: the output, a hard
        // link to the stored copy, would otherwise keep its pages from the next fetch.
        std::fs::remove_file(&out)?;
        let store = fetch(&b, &hash, size, None)?;
        settle()?;
        let raw = raw::send(size as usize)?;
        let sendme_secs = match &sendme {
            Some(s) => {
                settle()?;
                Some(s.receive(&tmp.path().join("sendme-out"))?)
            }
            None => None,
        };
        let (oc, sc) = (e2e.cpu.as_secs_f64() / gib, store.cpu.as_secs_f64() / gib);
        println!(
            "round {round}: -o {:.0} ({:.2} s, cpu {oc:.2}) | store {:.0} ({:.2} s, cpu {sc:.2}) | raw {:.0}{}",
            mb(e2e.secs),
            e2e.secs,
            mb(store.secs),
            store.secs,
            mb(raw),
            sendme_secs.map_or(String::new(), |s| format!(" | sendme {:.0}", mb(s)))
        );
        o.push(mb(e2e.secs));
        st.push(mb(store.secs));
        rw.push(mb(raw));
        o_cpu.push(oc);
        st_cpu.push(sc);
        wire.push(store.wire as f64 / size as f64);
        if let Some(s) = sendme_secs {
            sm.push(mb(s));
        }
    }
    let (o, st, rw) = (median(o), median(st), median(rw));
    println!(
        "medians: -o {o:.0} MB/s, store {st:.0} MB/s, raw {rw:.0} MB/s; -o / raw {:.2}, store / raw {:.2}",
        o / rw,
        st / rw
    );
    if !sm.is_empty() {
        let sm = median(sm);
        println!("sendme {sm:.0} MB/s; -o / sendme {:.2}", o / sm);
    }
    println!(
        "receiver CPU per GiB: -o {:.2} s, store {:.2} s; on the wire {:.4} × size (loopback bytes, TCP/IP headers included)",
        median(o_cpu),
        median(st_cpu),
        median(wire)
    );
    Ok(())
}
