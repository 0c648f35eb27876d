//! A stranger floods a node on every protocol at once for 30 s (`LATTICE_FLOOD_SECS`):
//! summaries that ask for every delta, maximum-size blob range requests, provider records,
//! topic subscriptions and connection cycling, all of it valid, so nothing gets the
//! stranger blocked and the node's budgets are all that protect it. Meanwhile an honest
//! node writes to a shared document. The victim's memory must stay within 64 MiB of where
//! it started, its own provider records must still publish, and the honest writes must
//! keep flowing. The figures are printed (`-- --nocapture`) for docs/benchmarks.md.
//!
//! Afterwards, a node with its file descriptors nearly exhausted keeps serving once its
//! clients leave, without spinning on `accept`.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{create_doc, run_ok, start_net, wait_for_ok};
use lattice_crdt::sync::Message;
use lattice_node::blobs::wire::BlobRequest;
use lattice_node::docs::wire::SyncRequest;
use lattice_overlay::{Keypair, Overlay, Protocol};
use lattice_testnet::daemon::Daemon;

const MIB: u64 = 1 << 20;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

async fn overlay_to(d: &Daemon) -> Overlay {
    let mut cfg = lattice_overlay::Config::new(Keypair::generate_ed25519());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.mdns = false;
    cfg.upnp = false;
    cfg.bootstrap = vec![d.addr().unwrap().parse().unwrap()];
    cfg.request_timeout = Duration::from_secs(10);
    let (o, mut events, _task) = lattice_overlay::spawn(cfg, None).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    o.dial(d.addr().unwrap().parse().unwrap()).await.unwrap();
    o
}

fn random_file(dir: &Path, name: &str, len: usize) -> std::path::PathBuf {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(name.as_bytes())
        .finalize_xof()
        .fill(&mut data);
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn a_stranger_flooding_every_protocol_costs_bounded_memory_and_stops_nobody() {
    let secs: u64 = std::env::var("LATTICE_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let net = start_net(2);
    let (victim, honest) = (&net.nodes[0], &net.nodes[1]);
    let pid = victim.pid().unwrap();
    let doc = create_doc(victim, "shared", &["--open"]);
    run_ok(honest, &["doc", "join", &doc]);
    for i in 0..200 {
        run_ok(victim, &["doc", "incr", &doc, &format!("k{}", i % 20), "1"]);
    }
    let file = random_file(net.tmp.path(), "served", 16 * MIB as usize);
    let served = run_ok(victim, &["blob", "add", file.to_str().unwrap()])["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    common::wait_converged(&[victim, honest], &doc);
    let baseline = rss_kib(pid);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let victim_peer = victim.peer_id().unwrap().parse().unwrap();
    let doc_id = doc.parse().unwrap();
    let hash = lattice_node::blobs::parse_hash(&served).unwrap();
    let stranger = rt.block_on(overlay_to(victim));
    let mut tasks = Vec::new();
    let only = std::env::var("LATTICE_FLOOD_ONLY").unwrap_or_default();
    let on = |what: &str| only.is_empty() || only == what;
    // Summaries with an empty version vector: "send me everything", again and again.
    for _ in 0..8 {
        if !on("sync") {
            break;
        }
        let (o, stop, sent) = (stranger.clone(), stop.clone(), sent.clone());
        let req = SyncRequest::Sync(Message::Summary {
            doc: doc_id,
            vv: Default::default(),
            reply: false,
            chains: Vec::new(),
            recovering: false,
        })
        .encode();
        tasks.push(rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = o.request(victim_peer, Protocol::Sync, req.clone()).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The largest blob requests there are: 8 MiB of encoded ranges each.
    for _ in 0..16 {
        if !on("blob") {
            break;
        }
        let (o, stop, sent) = (stranger.clone(), stop.clone(), sent.clone());
        let req = BlobRequest::Ranges {
            hash,
            ranges: vec![(0, 8192)],
            trace: None,
        }
        .encode();
        tasks.push(rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = o.request(victim_peer, Protocol::Blob, req.clone()).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Provider records for keys nobody has, and subscriptions to topics nobody uses.
    if on("dht") {
        let (o, stop) = (stranger.clone(), stop.clone());
        tasks.push(rt.spawn(async move {
            for i in 0u32..3_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = blake3::hash(&i.to_be_bytes()).as_bytes().to_vec();
                let _ = o.provide(key).await;
                let _ = o.subscribe(format!("/lattice/topic/flood-{i}")).await;
            }
        }));
    }
    // Connection cycling: new identities connect and vanish.
    if on("cycle") {
        let (stop, addr) = (stop.clone(), victim.addr().unwrap());
        let victim_for_cycle = addr.clone();
        tasks.push(rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut cfg = lattice_overlay::Config::new(Keypair::generate_ed25519());
                cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
                cfg.mdns = false;
                cfg.upnp = false;
                if let Ok((o, mut ev, task)) = lattice_overlay::spawn(cfg, None).await {
                    tokio::spawn(async move { while ev.recv().await.is_some() {} });
                    let _ = o.dial(victim_for_cycle.parse().unwrap()).await;
                    drop(o);
                    let _ = task.await;
                }
            }
        }));
    }

    // Meanwhile: the honest node writes, the victim publishes a new blob, memory is read.
    let start = Instant::now();
    let mut peak = baseline;
    let mut writes = 0u32;
    let mut fresh_hash = None;
    while start.elapsed() < Duration::from_secs(secs) {
        run_ok(honest, &["doc", "incr", &doc, "honest", "1"]);
        writes += 1;
        if fresh_hash.is_none() && start.elapsed() > Duration::from_secs(secs / 3) {
            let f = random_file(net.tmp.path(), "fresh", MIB as usize);
            let h = run_ok(victim, &["blob", "add", f.to_str().unwrap()])["hash"]
                .as_str()
                .unwrap()
                .to_owned();
            fresh_hash = Some(h);
        }
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The victim's own record went out during the flood; the honest node finds it.
    let fresh_hash = fresh_hash.expect("the run lasted long enough to add a blob");
    let victim_id = victim.peer_id().unwrap();
    wait_for_ok("the victim's own provider record", || {
        let ps = honest.json(&["blob", "providers", &fresh_hash])?;
        Ok(ps
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["peer_id"].as_str() == Some(&victim_id)))
            .then_some(()))
    });
    // Every honest write reached the victim.
    wait_for_ok("the honest writes at the victim", || {
        let v = victim.json(&["doc", "get", &doc, "honest"])?;
        Ok((v == serde_json::json!(writes)).then_some(()))
    });
    let after = rss_kib(pid);
    stop.store(true, Ordering::Relaxed);
    let requests = sent.load(Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(5));
    let status = run_ok(victim, &["status"]);
    println!(
        "flood: {secs} s, {requests} requests answered or refused, {writes} honest writes; \
         victim RSS baseline {} MiB, peak {} MiB (+{} MiB), after {} MiB; blocked {}",
        baseline / 1024,
        peak / 1024,
        (peak.saturating_sub(baseline)) / 1024,
        after / 1024,
        status["blocked"]
    );
    assert!(
        peak.saturating_sub(baseline) <= 64 * 1024,
        "RSS grew by {} MiB",
        (peak - baseline) / 1024
    );
    assert!(requests > 0);
}

#[test]
fn a_node_out_of_file_descriptors_neither_spins_nor_stops_serving() {
    let net = start_net(1);
    let d = &net.nodes[0];
    let pid = d.pid().unwrap();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // Room for a few more descriptors only.
    let limit = open + 8;
    let ok = std::process::Command::new("prlimit")
        .arg(format!("--nofile={limit}:{limit}"))
        .arg(format!("--pid={pid}"))
        .status();
    if !ok.is_ok_and(|s| s.success()) {
        common::skip(
            "flood::a_node_out_of_file_descriptors_neither_spins_nor_stops_serving",
            "prlimit cannot lower the daemon's descriptor limit here",
        );
        return;
    }
    // Far more clients than descriptors: the extra ones wait in the backlog, and accept
    // fails with EMFILE while they do.
    let clients: Vec<_> = (0..40)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(d.socket.clone()).ok())
        .collect();
    assert!(clients.len() > 20, "the backlog took {}", clients.len());
    let ticks = cpu_ticks(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - ticks;
    let hz = 100; // USER_HZ on Linux
    let share = used as f64 / hz as f64 / t0.elapsed().as_secs_f64();
    println!(
        "EMFILE: {} clients, daemon CPU {:.0}% of a core",
        clients.len(),
        share * 100.0
    );
    assert!(
        share < 0.5,
        "the daemon spun at {:.0}% of a core",
        share * 100.0
    );
    assert!(d.log_tail(200).contains("accept failed"));
    drop(clients);
    wait_for_ok("the daemon to serve again", || {
        Ok(d.json(&["status"]).ok().map(|_| ()))
    });
}
