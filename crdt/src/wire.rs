//! The compact, canonical layout of a document state or delta on the wire and on disk.
//!
//! Actors appear once, in a sorted table; every dot is then `(actor index, counter)`. A
//! context is, per actor, a flat list of inclusive ranges. Keys and elements are sorted.
//! Decoding checks everything a hostile peer could get wrong: indices out of range,
//! unsorted or duplicate keys, dots outside the context, non-canonical JSON.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

use crate::clock::Timestamp;
use crate::counter::PnEntry;
use crate::ctx::{CausalContext, Ranges};
use crate::dot::Dot;
use crate::id::ActorId;
use crate::json::Json;
use crate::map::{Entry, Map};
use crate::store::{Causal, DotSet, DotStore};

type WireMap<'a> = Vec<(Cow<'a, str>, WireEntry<'a>)>;

#[derive(Serialize, Deserialize)]
struct WireState<'a>(Vec<ActorId>, Vec<Vec<u64>>, WireMap<'a>);

/// One entry: counter as flat `(actor, counter, inc, dec)` quads, registers, multi-value
/// registers, set members with flat `(actor, counter)` pairs, and a nested map.
#[derive(Serialize, Deserialize, Default)]
#[allow(clippy::type_complexity)]
struct WireEntry<'a>(
    Vec<u64>,
    Vec<(u32, u64, Timestamp, Cow<'a, Json>)>,
    Vec<(u32, u64, Cow<'a, Json>)>,
    Vec<(Cow<'a, str>, Vec<u64>)>,
    WireMap<'a>,
);

struct Actors(BTreeMap<ActorId, u32>);

impl Actors {
    fn idx(&self, a: &ActorId) -> u32 {
        // Every dot in a store is covered by the context, whose actors form the table.
        self.0.get(a).copied().unwrap_or(u32::MAX)
    }
}

fn map_to_wire<'a>(m: &'a Map, actors: &Actors) -> WireMap<'a> {
    m.iter()
        .map(|(k, e)| (Cow::Borrowed(k.as_str()), entry_to_wire(e, actors)))
        .collect()
}

fn entry_to_wire<'a>(e: &'a Entry, actors: &Actors) -> WireEntry<'a> {
    let mut counter = Vec::with_capacity(e.counter.entries().count() * 4);
    for (d, v) in e.counter.entries() {
        counter.extend([u64::from(actors.idx(&d.actor)), d.counter, v.inc, v.dec]);
    }
    let register = e
        .register
        .entries()
        .map(|(d, (ts, v))| (actors.idx(&d.actor), d.counter, *ts, Cow::Borrowed(v)))
        .collect();
    let mv =
        e.mv.entries()
            .map(|(d, v)| (actors.idx(&d.actor), d.counter, Cow::Borrowed(v)))
            .collect();
    let set = e
        .set
        .entries()
        .map(|(m, dots)| {
            let flat = dots
                .iter()
                .flat_map(|d| [u64::from(actors.idx(&d.actor)), d.counter])
                .collect();
            (Cow::Borrowed(m.as_str()), flat)
        })
        .collect();
    WireEntry(counter, register, mv, set, map_to_wire(&e.map, actors))
}

impl Serialize for Causal<Map> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let table: Vec<ActorId> = self.ctx.actors().copied().collect();
        let actors = Actors(
            table
                .iter()
                .enumerate()
                .map(|(i, a)| (*a, i as u32))
                .collect(),
        );
        let ctx = self
            .ctx
            .iter()
            .map(|(_, r)| r.iter().flat_map(|&(lo, hi)| [lo, hi]).collect())
            .collect();
        WireState(table, ctx, map_to_wire(&self.store, &actors)).serialize(s)
    }
}

/// Why a decoded state was refused.
type Refusal = &'static str;

struct Decoder<'t> {
    table: &'t [ActorId],
    depth: usize,
}

impl Decoder<'_> {
    fn dot(&self, idx: u64, counter: u64) -> Result<Dot, Refusal> {
        let actor = usize::try_from(idx)
            .ok()
            .and_then(|i| self.table.get(i))
            .ok_or("actor index out of range")?;
        if counter == 0 {
            return Err("dot counter 0");
        }
        Ok(Dot::new(*actor, counter))
    }

    fn map(&mut self, w: WireMap<'_>) -> Result<Map, Refusal> {
        self.depth += 1;
        if self.depth > crate::doc::MAX_DEPTH {
            return Err("maps nested too deeply");
        }
        let mut out = Vec::with_capacity(w.len());
        for (k, e) in w {
            let entry = self.entry(e)?;
            if entry.is_bottom() {
                return Err("empty entry");
            }
            out.push((k.into_owned(), entry));
        }
        if !out.windows(2).all(|p| p[0].0 < p[1].0) {
            return Err("map keys not strictly sorted");
        }
        self.depth -= 1;
        Ok(Map(crate::store::DotMap(out.into_iter().collect())))
    }

    fn entry(&mut self, w: WireEntry<'_>) -> Result<Entry, Refusal> {
        let mut e = Entry::default();
        if w.0.len() % 4 != 0 {
            return Err("counter entries not in quads");
        }
        for q in w.0.chunks_exact(4) {
            let d = self.dot(q[0], q[1])?;
            if e.counter
                .0
                 .0
                .insert(
                    d,
                    PnEntry {
                        inc: q[2],
                        dec: q[3],
                    },
                )
                .is_some()
            {
                return Err("duplicate counter dot");
            }
        }
        for (i, c, ts, v) in w.1 {
            let v = Json::from_canonical(v.into_owned().as_str().to_owned())
                .ok_or("non-canonical JSON")?;
            if e.register
                .0
                 .0
                .insert(self.dot(i.into(), c)?, (ts, v))
                .is_some()
            {
                return Err("duplicate register dot");
            }
        }
        for (i, c, v) in w.2 {
            let v = Json::from_canonical(v.into_owned().as_str().to_owned())
                .ok_or("non-canonical JSON")?;
            if e.mv.0 .0.insert(self.dot(i.into(), c)?, v).is_some() {
                return Err("duplicate register dot");
            }
        }
        let mut members = Vec::with_capacity(w.3.len());
        for (m, flat) in w.3 {
            if flat.len() % 2 != 0 {
                return Err("set dots not in pairs");
            }
            let dots: SmallVec<[Dot; 1]> = flat
                .chunks_exact(2)
                .map(|p| self.dot(p[0], p[1]))
                .collect::<Result<_, _>>()?;
            members.push((
                m.into_owned(),
                DotSet::from_sorted(dots).ok_or("set dots empty or unsorted")?,
            ));
        }
        if !members.windows(2).all(|p| p[0].0 < p[1].0) {
            return Err("set members not strictly sorted");
        }
        e.set.0 .0 = members.into_iter().collect();
        e.map = self.map(w.4)?;
        Ok(e)
    }
}

impl<'de> Deserialize<'de> for Causal<Map> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let WireState(table, ranges, root) = WireState::deserialize(d)?;
        if table.len() != ranges.len() || !table.windows(2).all(|p| p[0] < p[1]) {
            return Err(D::Error::custom(
                "actor table unsorted or not matching the context",
            ));
        }
        let mut per_actor = Vec::with_capacity(table.len());
        for (a, flat) in table.iter().zip(ranges) {
            if flat.len() % 2 != 0 {
                return Err(D::Error::custom("context ranges not in pairs"));
            }
            let r: Ranges = flat.chunks_exact(2).map(|p| (p[0], p[1])).collect();
            per_actor.push((*a, r));
        }
        let ctx = CausalContext::from_ranges(per_actor).map_err(D::Error::custom)?;
        let store = Decoder {
            table: &table,
            depth: 0,
        }
        .map(root)
        .map_err(D::Error::custom)?;
        let mut outside = None;
        let mut repeated = None;
        let mut seen = std::collections::BTreeSet::new();
        store.for_each_dot(&mut |d| {
            if outside.is_none() && !ctx.contains(d) {
                outside = Some(*d);
            }
            if repeated.is_none() && !seen.insert(*d) {
                repeated = Some(*d);
            }
        });
        if let Some(d) = outside {
            return Err(D::Error::custom(format!(
                "dot {}:{} held but not in the context",
                d.actor, d.counter
            )));
        }
        // One dot names one write at one place: held twice, the join would depend on the
        // order deltas arrive in.
        if let Some(d) = repeated {
            return Err(D::Error::custom(format!(
                "dot {}:{} held twice",
                d.actor, d.counter
            )));
        }
        Ok(Causal { store, ctx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::doc::{Doc, Op, OpKind};
    use crate::id::DocId;

    fn sample() -> Doc {
        let mut d = Doc::new(DocId::derive(&ActorId::from_index(0), "t", &[0; 16]));
        let ops = [
            Op::new("n", OpKind::Incr(3)),
            Op::new("s", OpKind::Add(vec!["a".into(), "b".into()])),
            Op::new("r", OpKind::Set(Json::parse_or_string(r#"{"x":1}"#))),
            Op::new("mv", OpKind::SetMulti(Json::parse_or_string("2"))),
            Op::at(["m", "k"], OpKind::Incr(-1)),
            Op::new("s", OpKind::Remove(vec!["a".into()])),
        ];
        for (i, op) in ops.iter().enumerate() {
            let actor = ActorId::from_index(i as u64 % 2 + 1);
            let delta = d
                .prepare(
                    actor,
                    Timestamp {
                        millis: i as u64,
                        logical: 0,
                    },
                    op,
                )
                .unwrap();
            d.apply(&delta);
        }
        d
    }

    #[test]
    fn states_round_trip_and_encode_canonically() {
        let d = sample();
        let bytes = encode(d.state());
        let back: Causal<Map> = decode(&bytes, 1 << 20).unwrap();
        assert_eq!(&back, d.state());
        assert_eq!(encode(&back), bytes);
    }

    #[test]
    fn every_truncation_of_a_valid_encoding_is_refused() {
        let bytes = encode(sample().state());
        for n in 0..bytes.len() {
            assert!(
                decode::<Causal<Map>>(&bytes[..n], 1 << 20).is_err(),
                "prefix {n} decoded"
            );
        }
    }

    #[test]
    fn hostile_layouts_are_refused() {
        let a = ActorId::from_index(1);
        let enc = |s: &WireState<'_>| serde_cbor::to_vec(s).unwrap();
        let set_entry = |dots: Vec<u64>| {
            WireEntry(
                vec![],
                vec![],
                vec![],
                vec![(Cow::Borrowed("m"), dots)],
                vec![],
            )
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "index out of range",
                enc(&WireState(
                    vec![a],
                    vec![vec![1, 1]],
                    vec![(Cow::Borrowed("k"), set_entry(vec![5, 1]))],
                )),
            ),
            (
                "dot outside context",
                enc(&WireState(
                    vec![a],
                    vec![vec![1, 1]],
                    vec![(Cow::Borrowed("k"), set_entry(vec![0, 9]))],
                )),
            ),
            (
                "bad range",
                enc(&WireState(vec![a], vec![vec![5, 1]], vec![])),
            ),
            ("table mismatch", enc(&WireState(vec![a], vec![], vec![]))),
            (
                "unsorted keys",
                enc(&WireState(
                    vec![a],
                    vec![vec![1, 2]],
                    vec![
                        (Cow::Borrowed("z"), set_entry(vec![0, 1])),
                        (Cow::Borrowed("a"), set_entry(vec![0, 2])),
                    ],
                )),
            ),
            (
                "one dot under two keys",
                enc(&WireState(
                    vec![a],
                    vec![vec![1, 1]],
                    vec![
                        (Cow::Borrowed("a"), set_entry(vec![0, 1])),
                        (Cow::Borrowed("b"), set_entry(vec![0, 1])),
                    ],
                )),
            ),
            (
                "empty entry",
                enc(&WireState(
                    vec![a],
                    vec![vec![1, 1]],
                    vec![(Cow::Borrowed("k"), WireEntry::default())],
                )),
            ),
        ];
        for (what, bytes) in cases {
            assert!(
                decode::<Causal<Map>>(&bytes, 1 << 20).is_err(),
                "{what} was accepted"
            );
        }
    }
}
