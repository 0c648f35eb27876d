//! What the actor tells people watching: cuts for consistent snapshots (`doc.cut`),
//! writes applied for the status page's recent events, and trace lines
//! ([`crate::trace`]).

use std::collections::BTreeSet;

use lattice_crdt::sync::SignedDelta;
use lattice_crdt::{ActorId, DocId};
use tracing::debug;

use super::Actor;
use crate::activity::Activity;
use crate::docs::{DocCut, DocsError, Reply};
use crate::now_ms;

/// How far ahead of this node's clock a cut may be (`doc.cut`).
const CUT_AHEAD_MS: u64 = 1_000;
/// Cuts whose digest is being rebuilt at once; more are refused as busy.
pub(super) const MAX_CUTTING: usize = 2;

impl Actor {
    /// Records a cut of `doc` at `at_ms`; the digest of its writes is computed off the
    /// actor (a cut may hold every delta of a long log).
    pub(super) fn cut(&mut self, doc: &str, at_ms: u64, reply: Reply<DocCut>) {
        // The marker moves this node's clock to the cut: a cut ahead of now would make its
        // next writes look written in the future (and win over later ones elsewhere).
        let now = now_ms();
        if at_ms > now.saturating_add(CUT_AHEAD_MS) {
            let _ = reply.send(Err(DocsError::BadRequest(format!(
                "cannot cut at {at_ms} ms: {} ms ahead of this node's clock (at most {CUT_AHEAD_MS})",
                at_ms - now
            ))));
            return;
        }
        let Ok(slot) = self.cutting.clone().try_acquire_owned() else {
            let _ = reply.send(Err(DocsError::Busy));
            return;
        };
        let r = self.resolve(doc).and_then(|id| {
            let h = self
                .docs
                .get_mut(&id)
                .ok_or(DocsError::Unknown(doc.to_owned()))?;
            let cut = h
                .replica
                .cut(at_ms, now)
                .map_err(|e| DocsError::BadRequest(format!("cannot cut at {at_ms} ms: {e}")))?;
            let held: Vec<(ActorId, u64)> = h.replica.vv().iter().map(|(a, n)| (*a, *n)).collect();
            // A cut of everything held is the document as it is: no rebuild.
            let digest = cut.everything.then(|| h.replica.doc().digest());
            Ok((id, cut, held, digest))
        });
        let me = self.me;
        match r {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok((id, cut, held, digest)) => {
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    if reply.is_closed() {
                        return;
                    }
                    let _ = reply.send(Ok(DocCut {
                        id,
                        me,
                        at_ms,
                        digest: digest.unwrap_or_else(|| cut.digest(id)),
                        cut: cut.vv.iter().map(|(a, n)| (*a, *n)).collect(),
                        held,
                        straddled: cut.straddled,
                    }));
                });
            }
        }
    }
}

/// Writes applied to document `name` (author, seq, whether written here, age in ms):
/// each logs its trace line, and people watching (the status page) are told of each of a
/// few, or how many in a batch (a repair can bring thousands).
pub(super) fn applied_writes(
    activity: &Activity,
    name: &str,
    id: &DocId,
    writes: &[(ActorId, u64, bool, u64)],
) {
    for (author, seq, local, lag_ms) in writes {
        debug!(
            target: crate::trace::TARGET,
            trace = %crate::trace::write_id(id, author, *seq),
            doc = %id,
            author = %author,
            seq,
            lag_ms,
            "{}",
            if *local { "written here" } else { "applied" }
        );
    }
    const EACH: usize = 3;
    if writes.len() > EACH {
        let authors: BTreeSet<&ActorId> = writes.iter().map(|w| &w.0).collect();
        let lag = writes.iter().map(|w| w.3).max().unwrap_or(0);
        activity.push(
            "doc",
            format!(
                "{name}: {} writes by {} author(s) applied, lag up to {lag} ms",
                writes.len(),
                authors.len()
            ),
        );
        return;
    }
    for (author, seq, local, lag) in writes {
        let trace = crate::trace::write_id(id, author, *seq);
        let by = crate::auth::peer_of_actor(author)
            .map_or_else(|| author.to_string(), |p| p.to_string());
        let text = if *local {
            format!("{name}: write #{seq} here (trace {trace})")
        } else {
            format!("{name}: write #{seq} by {by} applied after {lag} ms (trace {trace})")
        };
        activity.push("doc", text);
    }
}

/// Logs each single write among `deltas` under its trace id ([`crate::trace`]).
pub(super) fn trace_deltas(deltas: &[SignedDelta], what: &str, to: &dyn std::fmt::Display) {
    if !tracing::enabled!(target: crate::trace::TARGET, tracing::Level::DEBUG) {
        return;
    }
    for d in deltas.iter().filter(|d| d.seqs.first == d.seqs.last) {
        debug!(
            target: crate::trace::TARGET,
            trace = %crate::trace::write_id(&d.doc, &d.author, d.seqs.last),
            doc = %d.doc,
            author = %d.author,
            seq = d.seqs.last,
            to = %to,
            "{what}"
        );
    }
}
