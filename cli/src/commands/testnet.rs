//! `lattice testnet ...`

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use lattice_testnet::net::Testnet;
use lattice_testnet::sim::SimOptions;
use lattice_testnet::topology::Topology;
use serde_json::json;

use crate::args::{Global, SimArgs, TestnetArgs, TestnetCommand};
use crate::output;

fn dir(d: &Option<PathBuf>) -> Result<PathBuf> {
    d.clone()
        .context("which testnet? give --dir DIR (or set LATTICE_TESTNET)")
}

pub fn run(g: &Global, t: TestnetArgs) -> Result<ExitCode> {
    match t.command {
        TestnetCommand::Sim(args) => sim(g, args),
        TestnetCommand::Up {
            nodes,
            base_port,
            netns,
            topology,
            daemon_args,
        } => {
            let dir = dir(&t.dir)?;
            let bin = std::env::current_exe().context("cannot find the lattice binary")?;
            let show = std::io::stderr().is_terminal() && !g.json;
            let topology = match (netns, topology) {
                (true, Some(path)) => Some(Topology::load(&path)?),
                (true, None) => Some(Topology::default()),
                (false, _) => None,
            };
            let hosts = topology.as_ref();
            let net = Testnet::up(
                &bin,
                &dir,
                nodes,
                base_port,
                &daemon_args,
                hosts,
                |what, i, n| {
                    if show {
                        eprint!("\r{what} {i}/{n}   ");
                        if what == "joined" && i == n {
                            eprintln!();
                        }
                    }
                },
            )?;
            let status = net.status();
            let text = format!(
                "{} nodes up in {} (manifest: {})",
                nodes,
                net.dir.display(),
                net.dir.join("testnet.json").display()
            );
            output::print(g.json, &status, text)?;
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Status => {
            let net = Testnet::open(&dir(&t.dir)?)?;
            let status = net.status();
            let mut text = format!(
                "{:<5} {:<8} {:<6} {:<6} PEER",
                "NODE", "PID", "ALIVE", "PEERS"
            );
            for s in &status {
                let pid = s.pid.map_or("-".into(), |p| p.to_string());
                let peers = s.peers.map_or("-".into(), |p| p.to_string());
                text.push_str(&format!(
                    "\n{:<5} {pid:<8} {:<6} {peers:<6} {}",
                    s.index,
                    s.alive,
                    s.peer_id.as_deref().unwrap_or("-")
                ));
            }
            output::print(g.json, &status, text)?;
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Down => {
            let net = Testnet::open(&dir(&t.dir)?)?;
            let n = net.down()?;
            output::print(
                g.json,
                &json!({ "stopped": n }),
                format!("stopped {n} nodes"),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Kill { index } => {
            let mut net = Testnet::open(&dir(&t.dir)?)?;
            net.kill(index)?;
            output::print(
                g.json,
                &json!({ "killed": index }),
                format!("killed node {index}"),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Restart { index } => {
            let mut net = Testnet::open(&dir(&t.dir)?)?;
            let replaced = net.restart(index)?;
            if replaced && !g.json {
                eprintln!("node {index} was running: killed it first");
            }
            let s = net.status().into_iter().nth(index);
            let mut v = serde_json::to_value(&s)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("replaced".into(), json!(replaced));
            }
            let text = if replaced {
                format!("restarted node {index} (it was running: killed it first)")
            } else {
                format!("restarted node {index}")
            };
            output::print(g.json, &v, text)?;
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Exec { index, args } => {
            let net = Testnet::open(&dir(&t.dir)?)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let status = net.exec(index, &args)?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
        TestnetCommand::WaitConverged { doc, timeout } => {
            let net = Testnet::open(&dir(&t.dir)?)?;
            anyhow::ensure!(
                timeout.is_finite() && timeout >= 0.0,
                "--timeout must be a number of seconds"
            );
            let c = net.wait_converged(&doc, std::time::Duration::from_secs_f64(timeout))?;
            // The contract prints this JSON with or without --json: scripts read it.
            output::print(true, &c, "")?;
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Snapshot { doc } => {
            let net = Testnet::open(&dir(&t.dir)?)?;
            let snap = net.snapshot(&doc)?;
            output::print(g.json, &snap, describe_snapshot(&snap))?;
            Ok(if snap.consistent {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        TestnetCommand::Partition { groups } => {
            let net = Testnet::open(&dir(&t.dir)?)?;
            net.partition(&groups)?;
            output::print(
                g.json,
                &json!({ "partition": groups }),
                format!("partitioned: {groups}"),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Heal => {
            let net = Testnet::open(&dir(&t.dir)?)?;
            net.heal()?;
            output::print(g.json, &json!({ "healed": true }), "healed")?;
            Ok(ExitCode::SUCCESS)
        }
        TestnetCommand::Logs { follow, trace } => {
            let net = Testnet::open(&dir(&t.dir)?)?;
            let mut out = std::io::stdout().lock();
            net.logs(&mut out, trace.as_deref())?;
            if follow {
                follow_logs(&net, &mut out, trace.as_deref())?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A snapshot for people: each node's cut and digest, what was in flight, and whether
/// the cut is consistent.
fn describe_snapshot(s: &lattice_testnet::snapshot::Snapshot) -> String {
    use std::fmt::Write as _;
    let mut out = format!("snapshot of {} at {} ms\n", s.doc, s.at_ms);
    for n in &s.nodes {
        let writes: u64 = n.cut.values().sum();
        let _ = writeln!(
            out,
            "node {:<3} digest {}  {writes} write(s) at the cut, {} after it{}",
            n.node,
            &n.digest[..12.min(n.digest.len())],
            n.after_cut,
            if n.straddled {
                " (a fold spans the cut)"
            } else {
                ""
            }
        );
    }
    if !s.without_doc.is_empty() {
        let list: Vec<String> = s.without_doc.iter().map(usize::to_string).collect();
        let _ = writeln!(out, "without the document: node(s) {}", list.join(","));
    }
    if s.in_flight.is_empty() {
        out.push_str("nothing in flight\n");
    }
    for f in &s.in_flight {
        let from = f
            .from
            .map_or_else(|| f.author.clone(), |i| format!("node {i}"));
        let _ = writeln!(
            out,
            "in flight {from} -> node {}: writes {}..={}",
            f.to, f.first, f.last
        );
    }
    if s.consistent {
        out.push_str("consistent");
    } else {
        let _ = write!(out, "NOT consistent: {}", s.problems.join("; "));
    }
    out
}

/// Prints lines appended to any node's log, tagged, until interrupted.
fn follow_logs(net: &Testnet, out: &mut impl Write, trace: Option<&str>) -> Result<()> {
    let mut offsets: Vec<u64> = net
        .manifest
        .nodes
        .iter()
        .map(|n| std::fs::metadata(&n.log).map(|m| m.len()).unwrap_or(0))
        .collect();
    loop {
        for (n, offset) in net.manifest.nodes.iter().zip(offsets.iter_mut()) {
            let Ok(mut f) = std::fs::File::open(&n.log) else {
                continue;
            };
            f.seek(SeekFrom::Start(*offset))?;
            let mut new = String::new();
            f.read_to_string(&mut new)?;
            // Only whole lines; a partial last line waits for the next round.
            let whole = new.rfind('\n').map_or(0, |i| i + 1);
            for line in new[..whole]
                .lines()
                .filter(|l| trace.is_none_or(|t| lattice_testnet::net::names_trace(l, t)))
            {
                writeln!(out, "[{}] {line}", n.index)?;
            }
            *offset += whole as u64;
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn sim(global: &Global, a: SimArgs) -> Result<ExitCode> {
    let opts = SimOptions {
        nodes: a.nodes,
        seed: a.seed,
        loss: a.loss,
        dup: a.dup,
        partitions: a.partitions,
        crashes: a.crashes,
        writes: a.writes,
        compaction: !a.no_compaction,
        away_secs: a.away,
    };
    let report = opts.run()?;
    output::print(global.json, &report, &report)?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
