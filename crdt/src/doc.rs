//! [`Doc`]: a replicated document, the top-level [`Map`] plus its causal context.
//!
//! Writes are [`Op`]s. [`Doc::prepare`] computes an op's [`Delta`] from the current state
//! without changing it; [`Doc::apply`] joins any delta, local or remote, into the state.
//! Deltas from the network go through [`Doc::validate_delta`] (in [`crate::check`]) first.

use serde::{Deserialize, Serialize};

use crate::clock::{ClockError, Timestamp};
use crate::counter::{CounterError, MAX_ENTRY_TOTAL};
use crate::ctx::CausalContext;
use crate::id::{ActorId, DocId};
use crate::json::Json;
use crate::map::{Entry, Kind, Map};
use crate::store::{Causal, DotStore};

/// Maximum nesting of maps in a document, and so the longest key path.
pub const MAX_DEPTH: usize = 16;

/// A change to a document, as shipped between replicas: a fragment of document state.
pub type Delta = Causal<Map>;

/// What a write does to the value at its path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Adds to a PN-counter (negative to subtract).
    Incr(i64),
    /// Sets an LWW register, replacing whatever the key held.
    Set(Json),
    /// Sets a multi-value register, replacing whatever the key held.
    SetMulti(Json),
    /// Adds members to an OR-set.
    Add(Vec<String>),
    /// Removes the observed members from an OR-set.
    Remove(Vec<String>),
    /// Removes the key and everything observed under it.
    Delete,
}

/// A write: what to do at which key. `path` names nested maps, then the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub path: Vec<String>,
    pub kind: OpKind,
}

impl Op {
    /// An op on a top-level key.
    pub fn new(key: impl Into<String>, kind: OpKind) -> Self {
        Op {
            path: vec![key.into()],
            kind,
        }
    }

    /// An op on a nested key: `path` lists the maps from the top, ending with the key.
    pub fn at(path: impl IntoIterator<Item = impl Into<String>>, kind: OpKind) -> Self {
        Op {
            path: path.into_iter().map(Into::into).collect(),
            kind,
        }
    }
}

/// A write or delta the document refuses. The document is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocError {
    #[error("empty key path")]
    EmptyPath,
    #[error("key path {depth} deep exceeds the maximum depth {MAX_DEPTH}")]
    TooDeep { depth: usize },
    #[error("key {key:?} holds a {found}, not a {wanted}")]
    WrongKind {
        key: String,
        found: Kind,
        wanted: Kind,
    },
    #[error(transparent)]
    Counter(#[from] CounterError),
    #[error("delta holds dot {actor}:{counter} that its context does not cover")]
    DotOutsideContext { actor: ActorId, counter: u64 },
    #[error("delta by {author} holds a value written by {actor}")]
    ForeignDot { author: ActorId, actor: ActorId },
    #[error("delta names dot {actor}:{counter}, more than {max_lead} ahead of the {known} seen")]
    DotTooFarAhead {
        actor: ActorId,
        counter: u64,
        known: u64,
        max_lead: u64,
    },
    #[error("dot {counter} appears twice in one delta")]
    RepeatedDot { counter: u64 },
    #[error("delta reuses dot {counter} of its author, who has written up to {known} here")]
    StaleDot { counter: u64, known: u64 },
    #[error(
        "delta covers dot {actor}:{counter}, past the {known} seen here (held back until seen)"
    )]
    NotYetSeen {
        actor: ActorId,
        counter: u64,
        known: u64,
    },
    #[error("counter entry {total} exceeds {MAX_ENTRY_TOTAL}")]
    CounterEntryTooLarge { total: u64 },
    #[error("register timestamp refused: {0}")]
    Clock(#[from] ClockError),
}

/// A replicated document.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    id: DocId,
    state: Causal<Map>,
}

impl Doc {
    pub fn new(id: DocId) -> Self {
        Doc {
            id,
            state: Causal::new(),
        }
    }

    pub fn id(&self) -> DocId {
        self.id
    }

    pub fn root(&self) -> &Map {
        &self.state.store
    }

    pub fn ctx(&self) -> &CausalContext {
        &self.state.ctx
    }

    pub fn state(&self) -> &Causal<Map> {
        &self.state
    }

    /// The whole document as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        self.state.store.to_json()
    }

    /// The value at `path` as JSON, or `None` if absent.
    pub fn get(&self, path: &[impl AsRef<str>]) -> Option<serde_json::Value> {
        self.entry(path).map(Entry::to_json)
    }

    /// The entry at `path`, if present.
    pub fn entry(&self, path: &[impl AsRef<str>]) -> Option<&Entry> {
        let (last, parents) = path.split_last()?;
        let mut map = &self.state.store;
        for p in parents {
            map = &map.get(p.as_ref())?.map;
        }
        map.get(last.as_ref())
    }

    /// BLAKE3 of the canonical encoding of the state: equal digests mean equal states.
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&crate::codec::encode(&self.state)).as_bytes()
    }

    /// Computes the delta of `op` written by `actor` at hybrid time `ts`, without changing
    /// the document. Apply it with [`Doc::apply`].
    pub fn prepare(&self, actor: ActorId, ts: Timestamp, op: &Op) -> Result<Delta, DocError> {
        if op.path.is_empty() {
            return Err(DocError::EmptyPath);
        }
        if op.path.len() > MAX_DEPTH {
            return Err(DocError::TooDeep {
                depth: op.path.len(),
            });
        }
        let w = Writer {
            ctx: &self.state.ctx,
            actor,
            ts,
        };
        let (store, ctx) = w.write(&self.state.store, &op.path, &op.kind)?;
        Ok(Causal { store, ctx })
    }

    /// Joins a delta (or a whole state) into the document.
    pub fn apply(&mut self, delta: &Delta) {
        self.state.join_with(delta);
    }

    /// The same join without the small-delta shortcut, for tests that compare the two.
    #[cfg(test)]
    pub(crate) fn apply_exact(&mut self, delta: &Delta) {
        self.state.join_exact(delta);
    }
}

/// Computes deltas for one write.
struct Writer<'a> {
    ctx: &'a CausalContext,
    actor: ActorId,
    ts: Timestamp,
}

impl Writer<'_> {
    /// The delta store and context of `kind` applied at `path` under `map`.
    fn write(
        &self,
        map: &Map,
        path: &[String],
        kind: &OpKind,
    ) -> Result<(Map, CausalContext), DocError> {
        let (key, rest) = path.split_first().ok_or(DocError::EmptyPath)?;
        let current = map.get(key);
        let empty = Entry::default();
        let entry = current.unwrap_or(&empty);
        if !rest.is_empty() {
            // Descend into a nested map, creating it implicitly.
            check_kind(key, entry, Kind::Map)?;
            let (inner, ctx) = self.write(&entry.map, rest, kind)?;
            let wrapped = Entry {
                map: inner,
                ..Entry::default()
            };
            return Ok((Map::singleton(key.clone(), wrapped), ctx));
        }
        let mut delta = Entry::default();
        let ctx = match kind {
            OpKind::Incr(by) => {
                check_kind(key, entry, Kind::Counter)?;
                let d = entry.counter.incr(self.ctx, self.actor, *by)?;
                delta.counter = d.store;
                d.ctx
            }
            OpKind::Set(v) => {
                // Replaces whatever the key held, of any kind.
                let d = entry.register.set(self.ctx, self.actor, self.ts, v.clone());
                delta.register = d.store;
                let mut ctx = entry.dots();
                ctx.union(&d.ctx);
                ctx
            }
            OpKind::SetMulti(v) => {
                let d = entry.mv.set(self.ctx, self.actor, v.clone());
                delta.mv = d.store;
                let mut ctx = entry.dots();
                ctx.union(&d.ctx);
                ctx
            }
            OpKind::Add(members) => {
                check_kind(key, entry, Kind::Set)?;
                let d = entry.set.add(self.ctx, self.actor, members.iter().cloned());
                delta.set = d.store;
                d.ctx
            }
            OpKind::Remove(members) => {
                check_kind(key, entry, Kind::Set)?;
                entry.set.remove(members.iter()).ctx
            }
            OpKind::Delete => entry.dots(),
        };
        Ok((Map::singleton(key.clone(), delta), ctx))
    }
}

fn check_kind(key: &str, entry: &Entry, wanted: Kind) -> Result<(), DocError> {
    match entry.kind() {
        Some(found) if found != wanted => Err(DocError::WrongKind {
            key: key.to_owned(),
            found,
            wanted,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(doc: &mut Doc, actor: u64, t: u64, op: Op) -> Delta {
        let d = doc
            .prepare(ActorId::from_index(actor), Timestamp::at(t), &op)
            .unwrap();
        doc.apply(&d);
        d
    }

    fn doc() -> Doc {
        Doc::new(DocId::derive(&ActorId::from_index(0), "t", &[0; 16]))
    }

    #[test]
    fn renders_every_kind_as_design_md_says() {
        let mut d = doc();
        write(&mut d, 1, 1, Op::new("n", OpKind::Incr(5)));
        write(&mut d, 1, 2, Op::new("n", OpKind::Incr(-2)));
        write(&mut d, 1, 3, Op::new("title", OpKind::Set("hello".into())));
        write(
            &mut d,
            1,
            4,
            Op::new("obj", OpKind::Set(Json::parse_or_string(r#"{"b":[1,2]}"#))),
        );
        write(
            &mut d,
            1,
            5,
            Op::new("tags", OpKind::Add(vec!["z".into(), "a".into()])),
        );
        write(
            &mut d,
            1,
            6,
            Op::new("mv", OpKind::SetMulti(Json::parse_or_string("7"))),
        );
        write(
            &mut d,
            1,
            7,
            Op::at(
                ["cfg", "net", "port"],
                OpKind::Set(Json::parse_or_string("8080")),
            ),
        );
        assert_eq!(
            d.to_json(),
            json!({
                "n": 3, "title": "hello", "obj": {"b": [1, 2]}, "tags": ["a", "z"],
                "mv": [7], "cfg": {"net": {"port": 8080}}
            })
        );
        assert_eq!(d.get(&["cfg", "net"]), Some(json!({"port": 8080})));
        assert_eq!(d.get(&["missing"]), None);
    }

    #[test]
    fn prepare_does_not_change_the_document() {
        let mut d = doc();
        write(&mut d, 1, 1, Op::new("n", OpKind::Incr(1)));
        let before = d.clone();
        d.prepare(
            ActorId::from_index(1),
            Timestamp::at(2),
            &Op::new("n", OpKind::Incr(1)),
        )
        .unwrap();
        assert_eq!(d, before);
    }

    #[test]
    fn writing_the_wrong_kind_is_refused_but_set_replaces_anything() {
        let mut d = doc();
        write(&mut d, 1, 1, Op::new("n", OpKind::Incr(1)));
        let err = d.prepare(
            ActorId::from_index(1),
            Timestamp::at(2),
            &Op::new("n", OpKind::Add(vec!["x".into()])),
        );
        assert!(matches!(
            err,
            Err(DocError::WrongKind {
                found: Kind::Counter,
                wanted: Kind::Set,
                ..
            })
        ));
        write(
            &mut d,
            1,
            3,
            Op::new("n", OpKind::Set("now a string".into())),
        );
        assert_eq!(d.get(&["n"]), Some(json!("now a string")));
        assert_eq!(d.entry(&["n"]).unwrap().counter.value(), 0);
    }

    #[test]
    fn delete_removes_observed_state_but_concurrent_writes_survive() {
        let mut a = doc();
        write(&mut a, 1, 1, Op::at(["m", "x"], OpKind::Incr(10)));
        let mut b = a.clone();
        let del = write(&mut a, 1, 2, Op::new("m", OpKind::Delete));
        let add = write(&mut b, 2, 3, Op::at(["m", "y"], OpKind::Incr(1)));
        a.apply(&add);
        b.apply(&del);
        assert_eq!(a, b);
        assert_eq!(a.to_json(), json!({"m": {"y": 1}}));
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn paths_deeper_than_the_limit_are_refused() {
        let d = doc();
        let path: Vec<String> = (0..=MAX_DEPTH).map(|i| i.to_string()).collect();
        let err = d.prepare(
            ActorId::from_index(1),
            Timestamp::at(1),
            &Op::at(path, OpKind::Incr(1)),
        );
        assert!(matches!(err, Err(DocError::TooDeep { .. })));
    }
}
