//! Fuzzing every decoder of untrusted bytes: the targets of this crate, and a bounded,
//! deterministic pass that any crate's tests can run on stable Rust.
//!
//! A target takes arbitrary bytes and must never panic, whatever they are: decode, then
//! push what decodes through the same checks a node applies. The same target functions
//! back the cargo-fuzz targets in the repository's `fuzz/` folder (nightly, coverage
//! guided); [`pass`] feeds them random inputs and mutations of valid ones (bit flips,
//! interesting bytes, truncations, duplicated and spliced runs) under `catch_unwind`, so
//! `cargo test` keeps them panic-free on every change.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codec;
use crate::doc::{Delta, Op, OpKind};
use crate::id::{ActorId, DocId};
use crate::sync::{self, Config, Genesis, Input, Message, Replica, SignedDelta, TestAuth};

/// A fuzz target: must not panic on any input.
pub type Target = fn(&[u8]);

/// Inputs per target in [`pass`], unless `LATTICE_FUZZ_ITERS` says otherwise.
pub const DEFAULT_ITERS: usize = 3_000;

/// What a pass found: inputs (hex) that made the target panic.
#[derive(Debug, Default)]
pub struct Findings {
    pub runs: usize,
    pub panics: Vec<String>,
}

fn mutate(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = b.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                const INTERESTING: [u8; 10] =
                    [0, 1, 0x17, 0x18, 0x1b, 0x7f, 0x80, 0x9f, 0xbf, 0xff];
                b[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
            }
            2 if len > 0 => b.truncate(rng.random_range(0..len)),
            3 if len > 0 => {
                // Duplicate a run: repeated fields, longer arrays.
                let s = rng.random_range(0..len);
                let e = rng.random_range(s..=len.min(s + 64));
                let run = b[s..e].to_vec();
                let at = rng.random_range(0..=b.len());
                b.splice(at..at, run);
            }
            4 => {
                let at = rng.random_range(0..=len);
                let n = rng.random_range(1..=8);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(at..at, junk);
            }
            5 if len > 8 => {
                // A CBOR length or integer head set huge.
                let i = rng.random_range(0..len - 8);
                b[i] = 0x1b;
                b[i + 1..i + 9].copy_from_slice(&u64::MAX.to_be_bytes());
            }
            _ if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = rng.random();
            }
            _ => b.push(rng.random()),
        }
    }
    b
}

/// Mutates the decoded CBOR tree of `seed` and encodes it again: valid CBOR with hostile
/// values (extreme integers, repeated or missing elements, altered bytes), which reaches
/// the checks behind the decoder far more often than byte-level noise.
fn mutate_tree(rng: &mut ChaCha8Rng, seed: &[u8]) -> Option<Vec<u8>> {
    use serde_cbor::Value;
    let mut v: Value = serde_cbor::from_slice(seed).ok()?;
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Map(m) => m.values().map(count).sum(),
            Value::Tag(_, b) => count(b),
            _ => 0,
        }
    }
    fn visit(v: &mut Value, target: &mut usize, rng: &mut ChaCha8Rng) -> bool {
        if *target == 0 {
            change(v, rng);
            return true;
        }
        *target -= 1;
        match v {
            Value::Array(a) => a.iter_mut().any(|x| visit(x, target, rng)),
            Value::Map(m) => m.values_mut().any(|x| visit(x, target, rng)),
            Value::Tag(_, b) => visit(b, target, rng),
            _ => false,
        }
    }
    fn change(v: &mut Value, rng: &mut ChaCha8Rng) {
        const INTS: [i128; 9] = [
            0,
            1,
            2,
            255,
            1 << 32,
            (1 << 48) + 1,
            u64::MAX as i128 - 1,
            u64::MAX as i128,
            -1,
        ];
        match v {
            Value::Integer(i) => {
                *i = if rng.random_bool(0.7) {
                    INTS[rng.random_range(0..INTS.len())]
                } else {
                    *i + rng.random_range(-2..=2)
                }
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.random_range(0..a.len());
                match rng.random_range(0..3) {
                    0 => {
                        let x = a[i].clone();
                        a.insert(i, x);
                    }
                    1 => {
                        a.remove(i);
                    }
                    _ => {
                        let j = rng.random_range(0..a.len());
                        a.swap(i, j);
                    }
                }
            }
            Value::Bytes(b) if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            Value::Text(t) => t.push('\u{0}'),
            Value::Bool(b) => *b = !*b,
            other => *other = Value::Integer(INTS[rng.random_range(0..INTS.len())]),
        }
    }
    for _ in 0..rng.random_range(1..=2) {
        let mut target = rng.random_range(0..count(&v));
        visit(&mut v, &mut target, rng);
    }
    serde_cbor::to_vec(&v).ok()
}

/// Runs `target` on `iters` inputs (random bytes, and mutations of `seeds`) from a fixed
/// RNG seed, and reports every input that panicked.
pub fn pass(name: &str, seeds: &[Vec<u8>], iters: usize, target: Target) -> Findings {
    let mut rng = ChaCha8Rng::seed_from_u64(blake3::hash(name.as_bytes()).as_bytes()[0].into());
    let mut found = Findings::default();
    for i in 0..iters {
        let input = if seeds.is_empty() || i % 4 == 0 {
            let n = rng.random_range(0..512);
            (0..n).map(|_| rng.random()).collect()
        } else {
            let seed = &seeds[rng.random_range(0..seeds.len())];
            match i % 4 {
                1 => mutate(&mut rng, seed),
                _ => mutate_tree(&mut rng, seed).unwrap_or_else(|| mutate(&mut rng, seed)),
            }
        };
        found.runs += 1;
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            found.panics.push(hex);
        }
    }
    found
}

/// Iterations from `LATTICE_FUZZ_ITERS`, or [`DEFAULT_ITERS`].
pub fn iters() -> usize {
    std::env::var("LATTICE_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ITERS)
}

fn doc_id() -> DocId {
    DocId::derive(&ActorId::from_index(0), "fuzz", &[0; 16])
}

fn replica() -> Replica {
    Replica::new(
        doc_id(),
        ActorId::from_index(100),
        Arc::new(TestAuth),
        Config::default(),
        0,
    )
}

/// Valid inputs to mutate: messages, deltas, a genesis and a state, as a peer would send
/// them (signed with [`TestAuth`], which the targets verify with).
pub fn seeds() -> Vec<Vec<u8>> {
    let mut w = replica();
    let ops = [
        Op::new("n", OpKind::Incr(3)),
        Op::new("s", OpKind::Add(vec!["a".into(), "b".into()])),
        Op::new("r", OpKind::Set("x".into())),
        Op::at(["m", "k"], OpKind::Incr(-1)),
        Op::new("s", OpKind::Remove(vec!["a".into()])),
    ];
    let mut deltas: Vec<SignedDelta> = Vec::new();
    for (tag, op) in ops.into_iter().enumerate() {
        let _ = w.handle(
            1_000,
            Input::Write {
                op,
                tag: tag as u64,
            },
        );
        while let Some(o) = w.poll_output() {
            if let sync::Output::Persist { ticket, delta } = o {
                deltas.push(delta);
                let _ = w.handle(1_000, Input::Persisted { ticket });
            }
        }
    }
    let mut out: Vec<Vec<u8>> = deltas.iter().map(codec::encode).collect();
    out.extend(deltas.iter().cloned().map(|d| Message::Delta(d).encode()));
    out.push(
        Message::Deltas {
            doc: doc_id(),
            deltas: deltas.clone(),
            more: true,
        }
        .encode(),
    );
    out.push(
        Message::Summary {
            doc: doc_id(),
            vv: w.vv().clone(),
            reply: true,
            chains: vec![(ActorId::from_index(100), [7; 16])],
            recovering: true,
        }
        .encode(),
    );
    out.push(
        Message::Evidence {
            doc: doc_id(),
            deltas: deltas[..2].to_vec(),
        }
        .encode(),
    );
    out.push(codec::encode(w.doc().state()));
    out.push(codec::encode(&Genesis {
        owner: ActorId::from_index(1),
        name: "g".into(),
        nonce: [1; 16],
        open: false,
        writers: vec![ActorId::from_index(2)],
    }));
    out
}

/// A replication message from a peer, through decoding, the funnel and a replica.
pub fn message(data: &[u8]) {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let mut r = replica();
    let _ = r.handle(
        1_000,
        Input::Message {
            from: ActorId::from_index(1),
            msg: msg.clone(),
        },
    );
    while r.poll_output().is_some() {}
    if let Ok(v) = sync::verify(msg, &TestAuth, Config::default().max_delta_bytes) {
        let mut r = replica();
        let _ = r.handle(
            1_000,
            Input::Verified {
                from: ActorId::from_index(1),
                msg: v,
            },
        );
    }
}

/// A signed delta (as stored, or inside a message): decoding and the stateless checks.
pub fn delta(data: &[u8]) {
    if let Ok(d) = codec::decode::<SignedDelta>(data, sync::MAX_MESSAGE_BYTES) {
        let _ = sync::funnel::check_shape(d.doc, &d, 1 << 20);
    }
}

/// A document state or delta body in the compact layout, then joined into a document.
pub fn state(data: &[u8]) {
    if let Ok(s) = codec::decode::<Delta>(data, 1 << 20) {
        let mut doc = crate::Doc::new(doc_id());
        doc.apply(&s);
        let _ = doc.to_json();
        let _ = doc.digest();
    }
}

/// A document's genesis, as a joining node receives it.
pub fn genesis(data: &[u8]) {
    if let Ok(g) = codec::decode::<Genesis>(data, 64 << 10) {
        let _ = g.id();
        let _ = sync::Acl::from_genesis(&g);
    }
}

/// Every target of this crate, by name.
pub const TARGETS: [(&str, Target); 4] = [
    ("message", message),
    ("delta", delta),
    ("state", state),
    ("genesis", genesis),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_decoder_of_this_crate_panics_on_random_or_mutated_input() {
        let seeds = seeds();
        for (name, target) in TARGETS {
            // Every seed is a valid input: the targets do reach past decoding.
            let f = pass(name, &seeds, iters(), target);
            assert!(f.panics.is_empty(), "{name} panicked on {:?}", f.panics);
            assert_eq!(f.runs, iters());
        }
    }

    #[test]
    fn the_seeds_decode() {
        let seeds = seeds();
        assert!(seeds.iter().any(|s| Message::decode(s).is_ok()));
        assert!(seeds
            .iter()
            .any(|s| codec::decode::<Delta>(s, 1 << 20).is_ok()));
        assert!(seeds
            .iter()
            .any(|s| codec::decode::<Genesis>(s, 1 << 20).is_ok()));
    }

    #[test]
    fn mutations_mostly_reach_past_the_decoder() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static DECODED: AtomicUsize = AtomicUsize::new(0);
        let f = pass("decodes", &seeds(), 1_000, |b| {
            if Message::decode(b).is_ok() || codec::decode::<SignedDelta>(b, 1 << 22).is_ok() {
                DECODED.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(f.panics.is_empty());
        let n = DECODED.load(Ordering::Relaxed);
        assert!(
            n > 100,
            "only {n} of 1,000 inputs decoded: the pass tests little"
        );
    }

    #[test]
    fn a_target_that_panics_is_reported() {
        let f = pass("boom", &[vec![1, 2, 3]], 50, |b| assert!(b.len() < 3));
        assert!(!f.panics.is_empty());
    }
}
