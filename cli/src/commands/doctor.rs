//! `lattice doctor`: what stands between this node and its peers. Asks the daemon (when
//! one answers) how the network sees it, and checks the files it depends on.

use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lattice_node::config;
use lattice_node::control::api::{self, method, NoParams};
use lattice_node::control::Client;
use serde::Serialize;

use super::node::session;
use crate::args::Global;
use crate::output;

/// Free space below which the data directory is flagged.
const LOW_DISK: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Ok,
    Info,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    verdict: Verdict,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    checks: Vec<Check>,
    /// No check failed.
    healthy: bool,
}

fn check(check: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        check,
        verdict,
        detail: detail.into(),
    }
}

/// What the daemon says of itself, if one answers.
fn ask_daemon(g: &Global) -> Result<(api::Status, Vec<api::Peer>), String> {
    session(g, async |c: &mut Client| {
        let status = c.call::<method::Status>(&NoParams).await?;
        let peers = c.call::<method::Peers>(&NoParams).await?;
        Ok((status, peers))
    })
    .map_err(|e| format!("{e:#}"))
}

fn network(s: &api::Status, peers: &[api::Peer]) -> Vec<Check> {
    let mut out = Vec::new();
    let relayed = s.relayed_addrs.len();
    out.push(match s.reachability.as_str() {
        "public" => match &s.reachable_at {
            Some(a) => check(
                "reachability",
                Verdict::Ok,
                format!("peers dialled this node back (at {a})"),
            ),
            None => check(
                "reachability",
                Verdict::Info,
                "public, as configured (--reachability public); not verified",
            ),
        },
        "private" if relayed > 0 => check(
            "reachability",
            Verdict::Info,
            format!("behind a NAT or firewall; reachable through {relayed} relay(s)"),
        ),
        "private" => check(
            "reachability",
            Verdict::Warn,
            "behind a NAT or firewall and no relay reservation yet: only peers this node dials can reach it",
        ),
        _ => check(
            "reachability",
            Verdict::Info,
            "not known yet: AutoNAT needs a few connected peers to dial back",
        ),
    });
    out.push(check(
        "relays",
        Verdict::Info,
        if relayed == 0 {
            "no relay reservations".to_owned()
        } else {
            s.relayed_addrs.join(", ")
        },
    ));
    out.push(check(
        "relay service",
        Verdict::Info,
        match (s.relay_service, s.reachability.as_str()) {
            (false, _) => "off",
            (true, "public") => "on: offered to peers that cannot be reached",
            (true, _) => "on, but offered only once this node is found reachable",
        },
    ));
    out.push(check(
        "upnp",
        Verdict::Info,
        s.upnp
            .clone()
            .unwrap_or_else(|| "no answer (off, or no gateway spoke yet)".into()),
    ));
    out.extend(s.nat_mapping.iter().map(mapping));
    out.push(clock(&s.clock_offsets));
    let connected: Vec<&api::Peer> = peers.iter().filter(|p| p.connected).collect();
    let through_relay = connected.iter().filter(|p| p.relayed).count();
    out.push(check(
        "connections",
        if connected.is_empty() {
            Verdict::Warn
        } else {
            Verdict::Ok
        },
        format!(
            "{} peers connected: {} direct, {through_relay} through a relay only; {} in the DHT",
            connected.len(),
            connected.len() - through_relay,
            s.dht_peers
        ),
    ));
    out
}

/// What the NAT does to this node's port on one transport.
fn mapping(m: &api::NatMapping) -> Check {
    let name = if m.transport == "tcp" {
        "nat mapping tcp"
    } else {
        "nat mapping udp"
    };
    let seen = m.seen.join(", ");
    match m.behaviour.as_str() {
        "none" => check(name, Verdict::Ok, format!("no NAT: peers see {seen}")),
        "endpoint-independent" => check(
            name,
            Verdict::Ok,
            format!(
                "one mapping for every peer ({seen}{}, told by {} peers): hole punching works",
                if m.port_preserving {
                    ", the port kept"
                } else {
                    ""
                },
                m.observers
            ),
        ),
        "symmetric" => check(
            name,
            Verdict::Warn,
            format!(
                "a new port for each peer ({seen}): a symmetric NAT; hole punches fail and \
                 peers behind NATs reach this node only through relays"
            ),
        ),
        _ if m.observers == 0 => check(name, Verdict::Info, "no peer has told yet"),
        _ => check(
            name,
            Verdict::Info,
            format!("one peer saw {seen}; it takes two to tell"),
        ),
    }
}

/// Fresh writes' clocks more than this far from ours are flagged.
const SKEW_WARN_MS: u64 = 5_000;

/// This node's clock against the clocks of fresh writes from peers.
fn clock(offsets: &[api::ClockOffset]) -> Check {
    let Some(worst) = offsets.first() else {
        return check(
            "clock",
            Verdict::Info,
            "no fresh writes from peers in the last 10 minutes to compare with",
        );
    };
    let secs = worst.offset_ms as f64 / 1e3;
    let side = if worst.offset_ms >= 0 {
        "ahead of"
    } else {
        "behind"
    };
    let detail = format!(
        "writes by {} run {:.1} s {side} this node's clock ({} author(s) compared)",
        worst.peer_id,
        secs.abs(),
        offsets.len()
    );
    if offsets.iter().any(|o| o.refused) {
        check(
            "clock",
            Verdict::Fail,
            format!("{detail}; writes too far ahead were refused: check both clocks (NTP)"),
        )
    } else if worst.offset_ms.unsigned_abs() > SKEW_WARN_MS {
        check(
            "clock",
            Verdict::Warn,
            format!("{detail}: one of the clocks is off (check NTP)"),
        )
    } else {
        check("clock", Verdict::Ok, detail)
    }
}

/// Whether `mode` lets anyone but the owner in (for the bits in `mask`).
fn open_to_others(mode: u32, mask: u32) -> bool {
    mode & mask != 0
}

fn permissions(data_dir: &Path, socket: Option<&Path>) -> Vec<Check> {
    let mut out = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    match std::fs::metadata(data_dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            let (verdict, detail) = if m.uid() != me {
                (
                    Verdict::Fail,
                    format!(
                        "{} belongs to uid {}, not to you",
                        data_dir.display(),
                        m.uid()
                    ),
                )
            } else if open_to_others(mode, 0o077) {
                (
                    Verdict::Warn,
                    format!(
                        "{} is {mode:o}: others may read it (chmod 700)",
                        data_dir.display()
                    ),
                )
            } else {
                (Verdict::Ok, format!("{} is {mode:o}", data_dir.display()))
            };
            out.push(check("data directory", verdict, detail));
        }
        Err(e) => out.push(check(
            "data directory",
            Verdict::Info,
            format!("{}: {e} (created at the first start)", data_dir.display()),
        )),
    }
    let key = data_dir.join("identity.key");
    if data_dir.exists() && !key.exists() {
        out.push(check(
            "identity key",
            Verdict::Info,
            format!(
                "{} does not exist yet (made at the first start)",
                key.display()
            ),
        ));
    }
    if let Ok(m) = std::fs::metadata(&key) {
        let mode = m.permissions().mode() & 0o777;
        out.push(if open_to_others(mode, 0o077) {
            check(
                "identity key",
                Verdict::Fail,
                format!(
                    "{} is {mode:o}: anyone who reads it can act as this node (chmod 600)",
                    key.display()
                ),
            )
        } else {
            check(
                "identity key",
                Verdict::Ok,
                format!("{} is {mode:o}", key.display()),
            )
        });
    }
    if let Some(socket) = socket {
        if let Ok(m) = std::fs::metadata(socket) {
            let mode = m.permissions().mode() & 0o777;
            out.push(if open_to_others(mode, 0o022) || m.uid() != me {
                check(
                    "control socket",
                    Verdict::Warn,
                    format!(
                        "{} is {mode:o}, uid {}: others may drive this node",
                        socket.display(),
                        m.uid()
                    ),
                )
            } else {
                check(
                    "control socket",
                    Verdict::Ok,
                    format!("{} is {mode:o}", socket.display()),
                )
            });
        }
    }
    out
}

fn free_disk(data_dir: &Path) -> Option<Check> {
    let path = if data_dir.exists() {
        data_dir
    } else {
        data_dir.parent()?
    };
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    let total = st.f_blocks as u64 * st.f_frsize as u64;
    let verdict = if free < LOW_DISK {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    Some(check(
        "free disk",
        verdict,
        format!(
            "{:.1} GiB free of {:.1} GiB",
            free as f64 / (1u64 << 30) as f64,
            total as f64 / (1u64 << 30) as f64
        ),
    ))
}

pub fn run(g: &Global, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    let socket = config::socket_path(g.socket.as_deref(), data_dir.as_deref()).ok();
    let data_dir = match ask_daemon(g) {
        Ok((status, peers)) => {
            checks.push(check(
                "daemon",
                Verdict::Ok,
                format!(
                    "running: {} (version {}, up {} s)",
                    status.peer_id, status.version, status.uptime_s
                ),
            ));
            checks.extend(network(&status, &peers));
            PathBuf::from(&status.data_dir)
        }
        Err(e) => {
            checks.push(check("daemon", Verdict::Fail, e));
            config::data_dir(data_dir.as_deref())?
        }
    };
    checks.extend(permissions(&data_dir, socket.as_deref()));
    checks.extend(free_disk(&data_dir));
    let healthy = checks.iter().all(|c| c.verdict != Verdict::Fail);
    let mut text = String::new();
    for c in &checks {
        let mark = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Info => "    ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        let _ = writeln!(text, "{mark}  {:<15} {}", c.check, c.detail);
    }
    let report = Report { checks, healthy };
    output::print(g.json, &report, text.trim_end())?;
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
