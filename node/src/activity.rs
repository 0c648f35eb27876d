//! Recent events for people watching a node (the status page): peers coming and going,
//! writes applied, blobs fetched. A bounded ring; watchers are woken when it changes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

/// Events kept.
pub const KEPT: usize = 100;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// `peer`, `doc` or `blob`.
    pub kind: &'static str,
    pub text: String,
}

/// The ring of recent events; cheap to clone (shared).
#[derive(Clone)]
pub struct Activity {
    ring: Arc<Mutex<VecDeque<Entry>>>,
    /// Counts events, so watchers can wait for the next one.
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            ring: Arc::default(),
            changed: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Activity {
    pub fn push(&self, kind: &'static str, text: String) {
        {
            let mut ring = crate::lock(&self.ring);
            if ring.len() == KEPT {
                ring.pop_front();
            }
            ring.push_back(Entry {
                at_ms: crate::now_ms(),
                kind,
                text,
            });
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// The kept events, newest first.
    pub fn recent(&self) -> Vec<Entry> {
        crate::lock(&self.ring).iter().rev().cloned().collect()
    }

    /// Wakes (its `changed()`) at every new event.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_kept_newest_first_bounded_and_watchers_wake() {
        let a = Activity::default();
        let mut w = a.subscribe();
        for i in 0..(KEPT + 5) {
            a.push("doc", format!("event {i}"));
        }
        let r = a.recent();
        assert_eq!(r.len(), KEPT);
        assert_eq!(r[0].text, format!("event {}", KEPT + 4));
        assert_eq!(r[KEPT - 1].text, "event 5");
        assert!(w.has_changed().unwrap());
        w.borrow_and_update();
        assert!(!w.has_changed().unwrap());
    }
}
