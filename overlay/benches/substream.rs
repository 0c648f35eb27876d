//! Baseline for blob transfer figures: the raw speed of one libp2p 0.57 substream over
//! TCP + Noise + Yamux on loopback, between two minimal swarms in this process, with the
//! same transport settings Lattice uses. Lattice's fetch throughput is compared with this
//! in docs/benchmarks.md.
//!
//! Measured twice: sender and receiver as two processes (as two daemons are), and both in
//! one process.
//!
//! `cargo bench -p lattice-overlay --bench substream` (`LATTICE_BENCH_MIB` sets the size,
//! default 1024).

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol, Swarm};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/lattice-bench/raw/1");

fn swarm() -> Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("transport")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Opens the bench stream once the dial has connected (polled every 10 ms, for at most
/// 10 s).
async fn open(control: &mut libp2p_stream::Control, peer: libp2p::PeerId) -> libp2p::Stream {
    for _ in 0..1_000 {
        if let Ok(s) = control.open_stream(peer, PROTOCOL).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("could not open a stream to {peer} within 10 s");
}

/// Reads a stream to its end; returns the bytes read.
async fn drain(s: &mut libp2p::Stream) -> usize {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0usize;
    loop {
        let r = s.read(&mut buf).await.expect("read");
        if r == 0 {
            return n;
        }
        n += r;
    }
}

/// Writes at least `total` bytes in `write`-byte writes, then closes; returns the bytes.
async fn pour(s: &mut libp2p::Stream, total: usize, write: usize) -> usize {
    let chunk = vec![7u8; write];
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).await.unwrap();
        sent += write;
    }
    s.close().await.unwrap();
    sent
}

/// Moves `total` bytes in writes of `write` bytes; returns MB/s (10^6 bytes).
async fn run(total: usize, write: usize) -> f64 {
    let mut a = swarm();
    let mut b = swarm();
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
            break address;
        }
    };
    let b_id = *b.local_peer_id();
    let mut incoming = b.behaviour().new_control().accept(PROTOCOL).unwrap();
    let mut control = a.behaviour().new_control();
    a.dial(addr).unwrap();
    tokio::spawn(async move {
        loop {
            b.select_next_some().await;
        }
    });
    tokio::spawn(async move {
        loop {
            a.select_next_some().await;
        }
    });
    let reader = tokio::spawn(async move {
        let (_, mut s) = incoming.next().await.expect("a stream");
        drain(&mut s).await
    });
    let mut stream = open(&mut control, b_id).await;
    let started = Instant::now();
    let sent = pour(&mut stream, total, write).await;
    let got = reader.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(got, sent);
    got as f64 / secs / 1e6
}

/// The receiving side as a process of its own (the bench re-runs itself): prints its
/// address, reads one stream to its end, prints the byte count, exits.
async fn receiver() {
    let mut b = swarm();
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
            break address;
        }
    };
    let mut incoming = b.behaviour().new_control().accept(PROTOCOL).unwrap();
    println!("ADDR {addr} {}", b.local_peer_id());
    tokio::spawn(async move {
        loop {
            b.select_next_some().await;
        }
    });
    let (_, mut s) = incoming.next().await.expect("a stream");
    println!("GOT {}", drain(&mut s).await);
}

/// Sends `total` bytes in `write`-byte writes to a receiver process; returns MB/s.
async fn two_processes(total: usize, write: usize) -> f64 {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env("LATTICE_BENCH_ROLE", "receiver")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("receiver process");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let mut parts = first.split_whitespace().skip(1);
    let addr: Multiaddr = parts.next().unwrap().parse().unwrap();
    let peer: libp2p::PeerId = parts.next().unwrap().parse().unwrap();
    let mut a = swarm();
    let mut control = a.behaviour().new_control();
    a.dial(addr).unwrap();
    tokio::spawn(async move {
        loop {
            a.select_next_some().await;
        }
    });
    let mut stream = open(&mut control, peer).await;
    let started = Instant::now();
    let sent = pour(&mut stream, total, write).await;
    let got = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let _ = child.wait();
    assert_eq!(got, format!("GOT {sent}"));
    sent as f64 / secs / 1e6
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mib: usize = std::env::var("LATTICE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("LATTICE_BENCH_ROLE").is_some() {
        rt.block_on(receiver());
        return;
    }
    let apart = rt.block_on(two_processes(mib << 20, 64 << 10));
    println!("raw substream, TCP+Noise+Yamux, two processes, {mib} MiB in 64 KiB writes: {apart:.0} MB/s");
    let big = rt.block_on(run(mib << 20, 64 << 10));
    println!(
        "raw substream, TCP+Noise+Yamux, one process, {mib} MiB in 64 KiB writes: {big:.0} MB/s"
    );
    let small = rt.block_on(run((mib << 20) / 8, 1 << 10));
    println!(
        "raw substream, TCP+Noise+Yamux, {} MiB in 1 KiB writes: {small:.0} MB/s",
        mib / 8
    );
    let data = vec![1u8; mib << 20];
    let started = Instant::now();
    let h = blake3::hash(&data);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "BLAKE3, one thread, {mib} MiB in memory: {:.0} MB/s ({})",
        data.len() as f64 / secs / 1e6,
        &h.to_hex()[..8]
    );
}
