//! `testnet snapshot DOC`: a consistent global snapshot of one document, in the sense of
//! Chandy and Lamport. The cut is a hybrid-clock time `T` (now, on this machine): every
//! live node is asked at once (`doc.cut`) to move its clock past `T` — the marker: none
//! of its writes from then on falls before the cut — and to say which writes it holds
//! with a clock at or before `T`. Hybrid clocks order causes before effects, so those
//! writes are closed under causality.
//!
//! What an author had written by the cut (durable or not) counts as sent; what a node
//! held counts as received; the difference, per pair, is in flight between them (the
//! channels' state). The snapshot checks what makes a cut consistent: no node holds a
//! write its author had not written by the cut, nodes holding the same writes have the
//! same digest, and no node's cut had to leave out a fold of writes spanning it.
//! Nodes that do not hold the document are listed apart.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lattice_node::control::api::{self, method};
use lattice_node::control::{Client, ClientError};
use serde::Serialize;

use crate::net::{is_our_daemon, Testnet};

/// Every node must answer this fast: a snapshot that misses a node is not one.
const ASK: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub doc: String,
    /// The cut's time (hybrid clock, ms since the Unix epoch).
    pub at_ms: u64,
    pub nodes: Vec<NodeState>,
    /// Writes sent but not yet received at the cut, per (author, node).
    pub in_flight: Vec<InFlight>,
    /// Live nodes that do not hold the document.
    pub without_doc: Vec<usize>,
    /// True when no node holds a write its author had not written by the cut and equal
    /// holdings have equal digests; `problems` says what failed otherwise.
    pub consistent: bool,
    pub problems: Vec<String>,
}

/// One node's state at the cut.
#[derive(Clone, Debug, Serialize)]
pub struct NodeState {
    pub node: usize,
    pub peer_id: String,
    /// Per author (peer id), the writes held at the cut: 1 to this.
    pub cut: BTreeMap<String, u64>,
    /// The digest of exactly those writes.
    pub digest: String,
    /// Writes held when asked that came after the cut.
    pub after_cut: u64,
    /// A folded run of writes spans the cut here (left out; the cut is then approximate).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub straddled: bool,
}

/// Writes `first..=last` of `author` that it had written by the cut and `to` lacked.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InFlight {
    /// The author's node, if it is one of this testnet's.
    pub from: Option<usize>,
    pub author: String,
    pub to: usize,
    pub first: u64,
    pub last: u64,
}

impl Testnet {
    /// Takes a snapshot of `doc` across every live node.
    pub fn snapshot(&self, doc: &str) -> Result<Snapshot> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.take(doc))
    }

    async fn take(&self, doc: &str) -> Result<Snapshot> {
        let at_ms = lattice_node::now_ms();
        let mut asks = tokio::task::JoinSet::new();
        for n in &self.manifest.nodes {
            if !n.pid.is_some_and(|p| is_our_daemon(p, &n.socket)) {
                continue;
            }
            let (index, socket, doc) = (n.index, n.socket.clone(), doc.to_owned());
            asks.spawn(async move {
                let ask = async {
                    let mut c = Client::connect(&socket).await?;
                    c.call::<method::DocCut>(&api::CutParams { doc, at_ms })
                        .await
                };
                let r = tokio::time::timeout(ASK, ask).await;
                (index, r)
            });
        }
        let mut cuts = BTreeMap::new();
        let mut without_doc = Vec::new();
        while let Some(done) = asks.join_next().await {
            let (index, r) = done.context("a node's question failed")?;
            match r {
                Ok(Ok(cut)) => {
                    cuts.insert(index, cut);
                }
                Ok(Err(ClientError::Api(e))) if e.code == api::ErrorCode::NotFound => {
                    without_doc.push(index);
                }
                Ok(Err(e)) => bail!("node {index}: {e}"),
                Err(_) => bail!("node {index} did not answer within {ASK:?}"),
            }
        }
        if cuts.is_empty() {
            bail!("no live node in this testnet holds {doc}");
        }
        without_doc.sort_unstable();
        let mut snap = assemble(doc, at_ms, &cuts);
        snap.without_doc = without_doc;
        Ok(snap)
    }
}

/// The snapshot from every node's cut.
fn assemble(doc: &str, at_ms: u64, cuts: &BTreeMap<usize, api::DocCut>) -> Snapshot {
    let node_of: BTreeMap<&str, usize> =
        cuts.iter().map(|(i, c)| (c.peer_id.as_str(), *i)).collect();
    // Sent by the cut: a node's own writes as it recorded them; an author outside the
    // testnet, whatever any node received of it.
    let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
    for c in cuts.values() {
        for (author, n) in &c.cut {
            let e = sent.entry(author.as_str()).or_default();
            *e = (*e).max(*n);
        }
    }
    for c in cuts.values() {
        let own = c.cut.get(&c.peer_id).copied().unwrap_or(0);
        sent.insert(c.peer_id.as_str(), own);
    }
    let mut problems = Vec::new();
    let mut in_flight = Vec::new();
    for (i, c) in cuts {
        for (author, sent_n) in &sent {
            let held = c.cut.get(*author).copied().unwrap_or(0);
            if held > *sent_n {
                problems.push(format!(
                    "node {i} holds write {held} of {author}, which holds only {sent_n} of its own \
                     at the cut (its marker was missed, or it lost its store, was removed as a \
                     writer or folded its writes across the cut)"
                ));
            } else if held < *sent_n {
                in_flight.push(InFlight {
                    from: node_of.get(author).copied(),
                    author: (*author).to_owned(),
                    to: *i,
                    first: held + 1,
                    last: *sent_n,
                });
            }
        }
    }
    let mut by_holding: BTreeMap<&BTreeMap<String, u64>, (usize, &str)> = BTreeMap::new();
    for (i, c) in cuts {
        if c.straddled {
            problems.push(format!(
                "node {i} folded a run of writes that spans the cut and left it out: its cut \
                 is approximate"
            ));
            continue;
        }
        match by_holding.get(&c.cut) {
            Some((j, d)) if *d != c.digest => problems.push(format!(
                "nodes {j} and {i} hold the same writes at the cut but their digests differ"
            )),
            Some(_) => {}
            None => {
                by_holding.insert(&c.cut, (*i, c.digest.as_str()));
            }
        }
    }
    let nodes = cuts
        .iter()
        .map(|(i, c)| NodeState {
            node: *i,
            peer_id: c.peer_id.clone(),
            cut: c.cut.clone(),
            digest: c.digest.clone(),
            after_cut: c
                .held
                .iter()
                .map(|(a, n)| n.saturating_sub(c.cut.get(a).copied().unwrap_or(0)))
                .sum(),
            straddled: c.straddled,
        })
        .collect();
    Snapshot {
        doc: doc.to_owned(),
        at_ms,
        nodes,
        in_flight,
        without_doc: Vec::new(),
        consistent: problems.is_empty(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(peer: &str, cut: &[(&str, u64)], digest: &str) -> api::DocCut {
        let vv: BTreeMap<String, u64> = cut.iter().map(|(a, n)| ((*a).to_owned(), *n)).collect();
        api::DocCut {
            doc: "d".into(),
            peer_id: peer.into(),
            at_ms: 1,
            cut: vv.clone(),
            held: vv,
            digest: digest.into(),
            straddled: false,
        }
    }

    #[test]
    fn in_flight_writes_are_what_authors_sent_and_others_lack() {
        let cuts = BTreeMap::from([
            (0, cut("a", &[("a", 3), ("b", 1)], "x")),
            (1, cut("b", &[("a", 2), ("b", 2)], "y")),
        ]);
        let s = assemble("d", 1, &cuts);
        assert!(s.consistent, "{:?}", s.problems);
        assert_eq!(
            s.in_flight,
            vec![
                InFlight {
                    from: Some(1),
                    author: "b".into(),
                    to: 0,
                    first: 2,
                    last: 2
                },
                InFlight {
                    from: Some(0),
                    author: "a".into(),
                    to: 1,
                    first: 3,
                    last: 3
                },
            ]
        );
    }

    #[test]
    fn a_write_held_before_its_author_wrote_it_or_unequal_digests_are_caught() {
        let cuts = BTreeMap::from([
            (0, cut("a", &[("a", 1), ("b", 2)], "x")),
            (1, cut("b", &[("b", 1)], "y")),
            (2, cut("c", &[("a", 1), ("b", 2)], "z")),
        ]);
        let s = assemble("d", 1, &cuts);
        assert!(!s.consistent);
        assert_eq!(s.problems.len(), 3, "{:?}", s.problems);
    }
}
