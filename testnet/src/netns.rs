//! Hosts in network namespaces: every node on a host of its own, with its own address on
//! a shared "internet" (a bridge in a hub namespace), optionally behind a NAT router of its
//! own (nftables masquerade; port-preserving like a home router, or with fully random
//! ports like a symmetric NAT) and with its uplink capped (tbf). Root only.
//!
//! Every namespace is named `<prefix>-...`; dropping the [`Lab`] deletes them (and with
//! them every link, address, route and rule inside), and [`remove_all`] deletes what an
//! interrupted run left behind.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The "internet" every host and router joins: 11.0.0.0/24 (a range AutoNAT treats as
/// global, so nodes find out whether they are reachable as on the real internet; it never
/// leaves the namespaces).
const WAN: [u8; 3] = [11, 0, 0];

/// How a NAT router maps a host's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// Keeps the host's source port where it can (endpoint-independent mapping, as most
    /// home routers): hole punching can work.
    Cone,
    /// A new random port for every connection (address-and-port-dependent mapping, as a
    /// symmetric NAT): hole punching fails; relays still work.
    Symmetric,
}

/// One host: the namespace it runs in and the address others reach it at (its router's
/// address, for a host behind a NAT).
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: String,
    pub addr: Ipv4Addr,
    /// Its router's namespace, if it is behind a NAT.
    pub router: Option<String>,
}

/// A set of hosts and the namespaces behind them; deleted on drop.
pub struct Lab {
    prefix: String,
    hub: String,
    namespaces: Vec<String>,
    next: u8,
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn run_in(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

/// Why namespaces cannot be made here, if they cannot: not root, no `ip`, no `nft`, or
/// the kernel refuses.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { nix::libc::geteuid() } != 0 {
        return Some("network namespaces need root".into());
    }
    for tool in ["ip", "nft", "tc"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is not installed (iproute2, nftables)"));
        }
    }
    // Unique per call: tests probing at once must not trip over each other's probe.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("ltprobe-{}-{n}", std::process::id());
    match run(&["ip", "netns", "add", &probe]) {
        Ok(()) => {
            let _ = run(&["ip", "netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!("cannot create a network namespace: {e:#}")),
    }
}

/// Deletes every namespace whose name starts with `prefix-`; returns how many.
pub fn remove_all(prefix: &str) -> Result<usize> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    let list = String::from_utf8_lossy(&out.stdout);
    let mine: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    for ns in &mine {
        // Gone meanwhile (another `down` at the same time) is as good as removed.
        if let Err(e) = run(&["ip", "netns", "del", ns]) {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                return Err(e);
            }
        }
    }
    Ok(mine.len())
}

impl Lab {
    /// A new, empty internet. `prefix` names every namespace of this lab.
    pub fn new(prefix: &str) -> Result<Lab> {
        remove_all(prefix)?;
        let hub = format!("{prefix}-hub");
        let mut lab = Lab {
            prefix: prefix.to_owned(),
            hub: hub.clone(),
            namespaces: Vec::new(),
            next: 1,
        };
        lab.namespace(&hub)?;
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    fn namespace(&mut self, name: &str) -> Result<()> {
        run(&["ip", "netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        run(&["ip", "-n", name, "link", "set", "lo", "up"])
    }

    /// Plugs `ns` into the internet as `eth0` with the next address; returns it.
    fn plug(&mut self, ns: &str) -> Result<Ipv4Addr> {
        let i = self.next;
        if i == 255 {
            bail!("a lab holds at most 254 hosts and routers");
        }
        self.next += 1;
        let port = format!("v{i}");
        run(&[
            "ip", "-n", &self.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
            "netns", ns,
        ])?;
        run(&["ip", "-n", &self.hub, "link", "set", &port, "master", "br0"])?;
        run(&["ip", "-n", &self.hub, "link", "set", &port, "up"])?;
        let addr = Ipv4Addr::new(WAN[0], WAN[1], WAN[2], i);
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        Ok(addr)
    }

    /// A host on the internet itself.
    pub fn public_host(&mut self, name: &str) -> Result<Host> {
        let ns = format!("{}-{name}", self.prefix);
        self.namespace(&ns)?;
        let addr = self.plug(&ns)?;
        Ok(Host {
            netns: ns,
            addr,
            router: None,
        })
    }

    /// A host on a LAN of its own (192.168.k.2) behind a NAT router on the internet.
    pub fn natted_host(&mut self, name: &str, kind: NatKind) -> Result<Host> {
        let router = format!("{}-{name}-nat", self.prefix);
        let ns = format!("{}-{name}", self.prefix);
        self.namespace(&router)?;
        self.namespace(&ns)?;
        let wan = self.plug(&router)?;
        let k = wan.octets()[3];
        let (gw, me) = (format!("192.168.{k}.1"), format!("192.168.{k}.2"));
        run(&[
            "ip", "-n", &router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        run(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gw}/24"),
            "dev",
            "lan",
        ])?;
        run(&["ip", "-n", &router, "link", "set", "lan", "up"])?;
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{me}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &ns, "route", "add", "default", "via", &gw])?;
        run_in(&router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        let mapping = match kind {
            NatKind::Cone => "masquerade",
            NatKind::Symmetric => "masquerade fully-random",
        };
        // Outbound connections are masqueraded; from the internet only replies come in, as
        // through a home router. Unsolicited packets are dropped before conntrack keeps an
        // entry for them: a kept entry would take the mapping a hole punch needs.
        let rules = format!(
            "table ip nat {{\n  chain masq {{\n    type nat hook postrouting priority srcnat;\n    oifname \"eth0\" {mapping}\n  }}\n}}\n\
             table ip guard {{\n  chain inbound {{\n    type filter hook prerouting priority mangle;\n    iifname \"eth0\" ct state new drop\n  }}\n}}\n"
        );
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &router, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run nft")?;
        std::io::Write::write_all(nft.stdin.as_mut().context("nft's stdin")?, rules.as_bytes())?;
        let out = nft.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft refused the NAT rules: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Host {
            netns: ns,
            addr: wan,
            router: Some(router),
        })
    }

    /// Caps what `host` can send to `mbit` Mbit/s (on its link towards the internet).
    pub fn cap_uplink(&self, host: &Host, mbit: u32) -> Result<()> {
        let ns = host.router.as_deref().unwrap_or(&host.netns);
        tbf(ns, "eth0", mbit)
    }

    /// Caps what `host` can receive to `mbit` Mbit/s: on the internet's side of its link
    /// (its router's, behind a NAT), what the internet sends towards it.
    pub fn cap_downlink(&self, host: &Host, mbit: u32) -> Result<()> {
        // Every host and router is plugged in as `v<k>`, k its address's last byte.
        let port = format!("v{}", host.addr.octets()[3]);
        tbf(&self.hub, &port, mbit)
    }
}

/// A token bucket on `dev` in `ns`: at most `mbit` Mbit/s leave by it.
fn tbf(ns: &str, dev: &str, mbit: u32) -> Result<()> {
    run_in(
        ns,
        &[
            "tc",
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{mbit}mbit"),
            "burst",
            "256kb",
            "latency",
            "200ms",
        ],
    )
}

impl Lab {
    /// Leaves the namespaces in place when the lab is dropped (for a testnet that outlives
    /// the command that made it; [`remove_all`] takes them down).
    pub fn keep(mut self) {
        self.namespaces.clear();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}
