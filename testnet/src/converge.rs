//! `testnet wait-converged DOC`: poll every live node's digest of a document until they
//! all agree, or time out naming the nodes that differ.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use lattice_node::control::api::{self, method};
use lattice_node::control::Client;
use serde::Serialize;

use crate::net::{is_our_daemon, Testnet};

/// How often digests are polled.
const POLL: Duration = Duration::from_millis(100);
/// One node's answer must come this fast, or it counts as not converged this round.
const ASK: Duration = Duration::from_secs(5);

/// The result of a successful wait.
#[derive(Clone, Debug, Serialize)]
pub struct Converged {
    pub converged_ms: u64,
    pub nodes: usize,
    pub digest: String,
    /// The node whose latest write from a peer took longest to arrive, and how long it
    /// took (ms, from the write's clock to its application there); absent if no node
    /// has applied a peer's write in the last ten minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest_node: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest_lag_ms: Option<u64>,
}

/// What one live node says about the document.
#[derive(Clone, Debug, PartialEq, Eq)]
enum View {
    /// Its digest, and its latest peer write's lag.
    Digest(String, Option<u64>),
    Missing(String),
}

impl Testnet {
    /// Waits until every live node holds `doc` with the same digest.
    pub fn wait_converged(&self, doc: &str, timeout: Duration) -> Result<Converged> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.converge(doc, timeout))
    }

    async fn converge(&self, doc: &str, timeout: Duration) -> Result<Converged> {
        let started = Instant::now();
        loop {
            let views = self.views(doc).await;
            if views.is_empty() {
                bail!("no live node in this testnet");
            }
            let digest = |v: &View| match v {
                View::Digest(d, _) => Some(d.clone()),
                View::Missing(_) => None,
            };
            let first = views.values().next().and_then(digest);
            if first.is_some() && views.values().all(|v| digest(v) == first) {
                let slowest = views
                    .iter()
                    .filter_map(|(i, v)| match v {
                        View::Digest(_, Some(lag)) => Some((*lag, *i)),
                        _ => None,
                    })
                    .max();
                return Ok(Converged {
                    converged_ms: started.elapsed().as_millis() as u64,
                    nodes: views.len(),
                    digest: first.unwrap_or_default(),
                    slowest_node: slowest.map(|(_, i)| i),
                    slowest_lag_ms: slowest.map(|(lag, _)| lag),
                });
            }
            if started.elapsed() >= timeout {
                bail!("not converged after {:?}: {}", timeout, describe(&views));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn views(&self, doc: &str) -> BTreeMap<usize, View> {
        let mut out = BTreeMap::new();
        for n in &self.manifest.nodes {
            if !n.pid.is_some_and(|p| is_our_daemon(p, &n.socket)) {
                continue;
            }
            let ask = async {
                let mut c = Client::connect(&n.socket).await?;
                c.call::<method::DocInfo>(&api::DocParams {
                    doc: doc.to_owned(),
                })
                .await
            };
            let view = match tokio::time::timeout(ASK, ask).await {
                Ok(Ok(info)) => View::Digest(info.digest, info.lag.map(|l| l.last_ms)),
                Ok(Err(e)) => View::Missing(e.to_string()),
                Err(_) => View::Missing("no answer".into()),
            };
            out.insert(n.index, view);
        }
        out
    }
}

/// Groups nodes by what they hold: "nodes 0,1,2: digest 3fa4…; node 3: no document".
fn describe(views: &BTreeMap<usize, View>) -> String {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, v) in views {
        let key = match v {
            View::Digest(d, _) => format!("digest {}", &d[..12.min(d.len())]),
            View::Missing(e) => e.clone(),
        };
        groups.entry(key).or_default().push(*i);
    }
    groups
        .iter()
        .map(|(what, nodes)| {
            let list: Vec<String> = nodes.iter().map(usize::to_string).collect();
            format!("node(s) {}: {what}", list.join(","))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
