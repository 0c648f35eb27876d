//! `testnet up --netns`: every node on a host of its own in a network namespace, joined
//! like separate machines on one internet, some behind NAT routers or with capped links
//! as a topology file says:
//!
//! ```toml
//! [[node]]
//! index = 1
//! nat = "cone"        # or "symmetric"; a node not listed is on the internet itself
//! uplink_mbit = 40    # optional: cap what it sends
//! downlink_mbit = 100 # optional: cap what it receives
//! ```
//!
//! Node 0 must be on the internet: the others bootstrap from it. The namespaces are named
//! after the testnet's directory, recorded in its manifest before any is made, and removed
//! by `testnet down`, also after an interrupted `up`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::netns::{self, Lab, NatKind};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub index: usize,
    #[serde(default)]
    pub nat: Option<String>,
    #[serde(default)]
    pub uplink_mbit: Option<u32>,
    #[serde(default)]
    pub downlink_mbit: Option<u32>,
}

/// One node's host, as the manifest records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostRecord {
    pub netns: String,
    /// Its address on the internet (its router's, behind a NAT).
    pub addr: Ipv4Addr,
    /// Behind a NAT: others cannot dial it directly.
    pub natted: bool,
}

/// The namespaces of a testnet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hosts {
    /// Every namespace of the testnet starts with `<prefix>-`.
    pub prefix: String,
    /// By node index; filled as the hosts are made.
    pub hosts: Vec<HostRecord>,
}

/// Where a node sits: behind which NAT, if any, and its link caps in Mbit/s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Placement {
    nat: Option<NatKind>,
    uplink_mbit: Option<u32>,
    downlink_mbit: Option<u32>,
}

fn nat_kind(s: &str) -> Result<NatKind> {
    match s {
        "cone" => Ok(NatKind::Cone),
        "symmetric" => Ok(NatKind::Symmetric),
        other => bail!("unknown nat {other:?}: expected \"cone\" or \"symmetric\""),
    }
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a topology", path.display()))
    }

    /// Each node's spec, checked against a testnet of `n` nodes.
    fn specs(&self, n: usize) -> Result<BTreeMap<usize, Placement>> {
        let mut out = BTreeMap::new();
        for s in &self.nodes {
            if s.index >= n {
                bail!(
                    "the topology names node {}, but the testnet has nodes 0-{}",
                    s.index,
                    n - 1
                );
            }
            let nat = s.nat.as_deref().map(nat_kind).transpose()?;
            if s.index == 0 && nat.is_some() {
                bail!("node 0 must be on the internet: the other nodes bootstrap from it");
            }
            for (name, cap) in [
                ("uplink_mbit", s.uplink_mbit),
                ("downlink_mbit", s.downlink_mbit),
            ] {
                if cap == Some(0) {
                    bail!("node {}: {name} must be at least 1", s.index);
                }
            }
            let placement = Placement {
                nat,
                uplink_mbit: s.uplink_mbit,
                downlink_mbit: s.downlink_mbit,
            };
            if out.insert(s.index, placement).is_some() {
                bail!("the topology names node {} twice", s.index);
            }
        }
        Ok(out)
    }
}

/// The namespace prefix of the testnet in `dir`: short (interface and namespace names
/// are limited) and the same for every command on that directory.
pub fn prefix_for(dir: &Path) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("lt{:06x}", h.finish() & 0xff_ffff)
}

/// Refuses, saying why, where namespaces cannot be made.
pub fn check_possible() -> Result<()> {
    match netns::unavailable() {
        Some(why) => bail!(
            "`testnet up --netns` cannot run here: {why} (run as root with iproute2 and nftables)"
        ),
        None => Ok(()),
    }
}

/// Makes a host for each of `n` nodes; `record` is called with each as it is made (so an
/// interrupted run leaves a manifest that `down` can clean up after).
pub fn make_hosts(
    prefix: &str,
    n: usize,
    topology: &Topology,
    mut record: impl FnMut(HostRecord) -> Result<()>,
) -> Result<()> {
    let specs = topology.specs(n)?;
    let mut lab = Lab::new(prefix)?;
    for i in 0..n {
        let at = specs.get(&i).copied().unwrap_or_default();
        let name = format!("n{i}");
        let host = match at.nat {
            Some(kind) => lab.natted_host(&name, kind)?,
            None => lab.public_host(&name)?,
        };
        if let Some(mbit) = at.uplink_mbit {
            lab.cap_uplink(&host, mbit)?;
        }
        if let Some(mbit) = at.downlink_mbit {
            lab.cap_downlink(&host, mbit)?;
        }
        record(HostRecord {
            netns: host.netns.clone(),
            addr: host.addr,
            natted: host.router.is_some(),
        })?;
    }
    // The namespaces outlive this command; `down` removes them.
    lab.keep();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_are_checked() {
        let t: Topology = toml::from_str(
            "[[node]]\nindex = 1\nnat = \"cone\"\nuplink_mbit = 40\ndownlink_mbit = 100\n",
        )
        .unwrap();
        let specs = t.specs(3).unwrap();
        assert_eq!(
            specs[&1],
            Placement {
                nat: Some(NatKind::Cone),
                uplink_mbit: Some(40),
                downlink_mbit: Some(100)
            }
        );
        let zero: Topology = toml::from_str("[[node]]\nindex = 1\ndownlink_mbit = 0\n").unwrap();
        assert!(zero
            .specs(2)
            .unwrap_err()
            .to_string()
            .contains("downlink_mbit"));
        assert!(t.specs(1).unwrap_err().to_string().contains("nodes 0-0"));
        let bad: Topology = toml::from_str("[[node]]\nindex = 0\nnat = \"cone\"\n").unwrap();
        assert!(bad.specs(2).unwrap_err().to_string().contains("node 0"));
        let odd: Topology = toml::from_str("[[node]]\nindex = 1\nnat = \"full\"\n").unwrap();
        assert!(odd.specs(2).is_err());
        assert!(toml::from_str::<Topology>("[[node]]\nindex = 1\nnatt = \"cone\"\n").is_err());
    }

    #[test]
    fn prefixes_are_short_and_stable() {
        let a = prefix_for(Path::new("/tmp/a"));
        assert_eq!(a, prefix_for(Path::new("/tmp/a")));
        assert_ne!(a, prefix_for(Path::new("/tmp/b")));
        assert!(a.len() <= 8);
    }
}
