//! The simulated users: random writes, and a model of what the acknowledged ones imply
//! for the final state.

use std::collections::BTreeSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::doc::{Doc, Op, OpKind};
use crate::json::Json;

/// A write the model tracks.
#[derive(Clone, Debug)]
pub(super) struct Write {
    pub(super) id: u64,
    kind: Tracked,
}

#[derive(Clone, Debug)]
enum Tracked {
    /// Added a unique member to the grow-only set `g` (never removed).
    Grow(String),
    /// Added to the counter `c` (only ever incremented).
    Count(i64),
    /// Any other write: exercises the other types and removals, not checked one by one.
    Other,
}

#[derive(Default)]
pub(super) struct Workload {
    next_id: u64,
}

impl Workload {
    pub(super) fn next(&mut self, node: usize, rng: &mut ChaCha8Rng) -> (Write, Op) {
        self.next_id += 1;
        let id = self.next_id;
        let roll = rng.random_range(0..100);
        let (kind, op) = match roll {
            0..=34 => {
                let m = format!("n{node}-w{id}");
                (Tracked::Grow(m.clone()), Op::new("g", OpKind::Add(vec![m])))
            }
            35..=59 => {
                let by = rng.random_range(1..=5);
                (Tracked::Count(by), Op::new("c", OpKind::Incr(by)))
            }
            60..=69 => (
                Tracked::Other,
                Op::new(
                    "r",
                    OpKind::Set(Json::parse_or_string(&format!("{node}:{id}"))),
                ),
            ),
            70..=76 => {
                let m = format!("m{}", rng.random_range(0..8));
                (Tracked::Other, Op::new("s", OpKind::Add(vec![m])))
            }
            77..=82 => {
                let m = format!("m{}", rng.random_range(0..8));
                (Tracked::Other, Op::new("s", OpKind::Remove(vec![m])))
            }
            83..=90 => {
                let k = format!("x{}", rng.random_range(0..3));
                (
                    Tracked::Other,
                    Op::at(["m", k.as_str()], OpKind::Incr(rng.random_range(-3..=3))),
                )
            }
            91..=93 => (Tracked::Other, Op::new("m", OpKind::Delete)),
            _ => (
                Tracked::Other,
                Op::new(
                    "mv",
                    OpKind::SetMulti(Json::parse_or_string(&id.to_string())),
                ),
            ),
        };
        (Write { id, kind }, op)
    }
}

/// What the acknowledged writes imply.
#[derive(Default)]
pub(super) struct Model {
    grow: BTreeSet<String>,
    count: i128,
    /// Members of writes whose clients were told they failed: never to be seen.
    refused: BTreeSet<String>,
}

impl Model {
    pub(super) fn acknowledge(&mut self, w: &Write) {
        match &w.kind {
            Tracked::Grow(m) => {
                self.grow.insert(m.clone());
            }
            Tracked::Count(by) => self.count += i128::from(*by),
            Tracked::Other => {}
        }
    }

    /// A write its client was told failed.
    pub(super) fn refuse(&mut self, w: &Write) {
        if let Tracked::Grow(m) = &w.kind {
            self.refused.insert(m.clone());
        }
    }

    /// Compares a final state with the model: the number of acknowledged writes missing,
    /// and a description of every other disagreement.
    pub(super) fn check(&self, doc: &Doc) -> (u64, Vec<String>) {
        let mut problems = Vec::new();
        let present: BTreeSet<String> = doc
            .entry(&["g"])
            .map(|e| e.set.iter().cloned().collect())
            .unwrap_or_default();
        let lost = self.grow.difference(&present).count() as u64;
        if lost > 0 {
            problems.push(format!("{lost} acknowledged set members missing"));
        }
        for extra in present.difference(&self.grow).take(3) {
            problems.push(format!("unacknowledged member {extra} present"));
        }
        for failed in present.intersection(&self.refused).take(3) {
            problems.push(format!("member {failed} present though its write failed"));
        }
        let count = doc.entry(&["c"]).map_or(0, |e| e.counter.value());
        if count != self.count {
            problems.push(format!(
                "counter is {count}, acknowledged increments sum to {}",
                self.count
            ));
        }
        let lost_incr = u64::from(count < self.count);
        (lost + lost_incr, problems)
    }
}
