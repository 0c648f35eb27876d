//! What the replica does with time: when it next needs a tick, and what a tick does.

use super::{Replica, CATCH_UP_WAIT_MS};

impl Replica {
    /// When this replica next needs an [`Input::Tick`] (ms, on the clock its inputs
    /// carry): the earliest of anti-entropy with a known peer, the expiry of a held-back
    /// delta and the end of a catch-up wait. `None`: nothing is due until another input
    /// arrives, so an idle replica costs nothing.
    pub fn poll_timeout(&self) -> Option<u64> {
        let anti_entropy = (!self.peers.is_empty()).then_some(self.next_anti_entropy_ms);
        let catch_up = self.asked_ms.map(|at| at.saturating_add(CATCH_UP_WAIT_MS));
        let pending = self.pending.values().map(|h| h.expires_ms).min();
        [anti_entropy, catch_up, pending]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn on_tick(&mut self, now_ms: u64) {
        self.expire_pending(now_ms);
        // Asked, and nobody sent any of our own writes back in time: there are none.
        if self
            .asked_ms
            .is_some_and(|at| now_ms >= at.saturating_add(CATCH_UP_WAIT_MS))
        {
            self.catching_up = false;
            self.asked_ms = None;
        }
        if now_ms < self.next_anti_entropy_ms || self.peers.is_empty() {
            return;
        }
        self.next_anti_entropy_ms = now_ms + self.config.anti_entropy_interval_ms;
        self.summary_to_random_peer(None);
    }
}
