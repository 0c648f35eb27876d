//! What a replica sends to start or carry an anti-entropy exchange (its summary, batches
//! of deltas), and the digest of its state that peers compare before any summary is sent.

use rand::Rng;

use super::Replica;
use crate::id::ActorId;
use crate::sync::interface::Output;
use crate::sync::message::{Message, SignedDelta};

impl Replica {
    /// A digest of what this replica holds: its version vector and every author's chain,
    /// what a summary carries. Two replicas with equal digests have nothing to exchange, so
    /// peers compare these, many documents at once, before any summary is sent.
    pub fn state_digest(&self) -> [u8; 8] {
        let mut h = blake3::Hasher::new_derive_key("lattice replica digest v1");
        for (author, seq) in self.log.vv().iter() {
            h.update(&author.0);
            h.update(&seq.to_le_bytes());
        }
        h.update(&[0xff]);
        for (author, chain) in self.log.chains() {
            h.update(&author.0);
            h.update(&chain);
        }
        let mut out = [0u8; 8];
        out.copy_from_slice(&h.finalize().as_bytes()[..8]);
        out
    }

    /// Starts an exchange with a random peer other than `except`, if there is one.
    pub(super) fn summary_to_random_peer(&mut self, except: Option<ActorId>) {
        let candidates =
            self.peers.len() - usize::from(except.is_some_and(|e| self.peers.contains(&e)));
        if candidates == 0 {
            return;
        }
        let i = self.rng.random_range(0..candidates);
        if let Some(peer) = self
            .peers
            .iter()
            .filter(|p| Some(**p) != except)
            .nth(i)
            .copied()
        {
            self.send_summary(peer, true);
        }
    }

    pub(super) fn send_summary(&mut self, to: ActorId, reply: bool) {
        if self.catching_up && self.asked_ms.is_none() {
            self.asked_ms = Some(self.now_ms);
        }
        let msg = Message::Summary {
            doc: self.doc.id(),
            vv: self.log.vv().clone(),
            reply,
            chains: self.log.chains(),
            recovering: self.catching_up,
        };
        self.outputs.push_back(Output::Send { to, msg });
    }

    /// Sends `to` a batch of deltas, if there are any.
    pub(super) fn send_deltas(&mut self, to: ActorId, deltas: Vec<SignedDelta>, more: bool) {
        if !deltas.is_empty() {
            let msg = Message::Deltas {
                doc: self.doc.id(),
                deltas,
                more,
            };
            self.outputs.push_back(Output::Send { to, msg });
        }
    }
}
