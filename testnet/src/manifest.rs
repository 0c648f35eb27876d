//! `DIR/testnet.json`: what a testnet is made of, so any later command (or a script) can
//! find every node. Written after each node starts, so an interrupted `up` can still be
//! taken `down`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const FILE: &str = "testnet.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The `lattice` binary the nodes run.
    pub bin: PathBuf,
    /// Node `i` listens on TCP port `base_port + i` (else a random port).
    pub base_port: Option<u16>,
    /// Extra `lattice daemon` arguments for every node.
    pub daemon_args: Vec<String>,
    pub nodes: Vec<Node>,
    /// The network namespaces of a `--netns` testnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<crate::topology::Hosts>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub index: usize,
    pub peer_id: Option<String>,
    pub socket: PathBuf,
    /// A dialable address: listen address plus `/p2p/<peer id>`.
    pub listen: Option<String>,
    pub pid: Option<u32>,
    pub log: PathBuf,
    pub data_dir: PathBuf,
}

impl Manifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    pub fn load(dir: &Path) -> Result<Manifest> {
        let p = Self::path(dir);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "no testnet in {} (start one with `lattice testnet up -n N --dir {}`)",
                dir.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a testnet manifest", p.display()))
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let p = Self::path(dir);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }
}
