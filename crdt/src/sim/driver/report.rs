//! The end of a run: each replica checked against the model of acknowledged writes, and
//! the state against what it would be without compaction.

use super::Sim;
use crate::sim::Report;

impl Sim<'_> {
    pub(super) fn finish(mut self) -> Report {
        self.report.virtual_ms = self.now;
        // After lingering (compaction went on), every replica must still agree; without,
        // the run ended at the first event after convergence, which may be one more write.
        self.report.converged =
            self.converged_at.is_some() && (self.cfg.linger_ms == 0 || self.all_agree());
        self.report.converge_ms = self.converged_at.map(|t| t - self.faults_over_ms);
        let mut digests = std::collections::BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(r) = &n.replica else {
                self.report
                    .model_mismatches
                    .push(format!("node {i} is down at the end"));
                continue;
            };
            self.report.equivocations += r.stats().equivocations;
            self.report.folds += r.stats().folded;
            self.report.log_bytes = self.report.log_bytes.max(r.log_bytes() as u64);
            let (lost, problems) = self.model.check(r.doc());
            self.report.acknowledged_lost += lost;
            self.report
                .model_mismatches
                .extend(problems.into_iter().map(|p| format!("node {i}: {p}")));
            digests.insert(r.doc().digest());
        }
        let mut uncompacted = crate::doc::Doc::new(self.doc);
        for d in &self.acknowledged {
            uncompacted.apply(&d.delta);
            self.report.uncompacted_bytes += (d.signing_bytes().len() + d.signature.len()) as u64;
        }
        if self.byzantine.is_empty() && digests.len() == 1 {
            self.report.compaction_changed_state = digests.first() != Some(&uncompacted.digest());
            self.report.state_bytes = crate::codec::encode(uncompacted.state()).len() as u64;
        }
        if digests.len() == 1 {
            self.report.digest = digests
                .first()
                .map(|d| d.iter().map(|b| format!("{b:02x}")).collect());
        }
        // Keep reports short when something is badly wrong.
        self.report.model_mismatches.truncate(20);
        self.report
    }
}
