//! OR-map: string keys to nested CRDT values; the content of a document.
//!
//! Every key holds an [`Entry`], a product of one store per value kind. Normally only one
//! kind is live; if replicas concurrently write different kinds to the same key, all
//! survive the merge and [`Entry::kind`] picks the one shown by a fixed precedence
//! (map, set, counter, register, multi-value register), identically on every replica.
//!
//! Remove semantics (observed-remove, add-wins): deleting a key removes every dot observed
//! under it, at any depth. Writes concurrent with the delete survive, and the key then
//! holds only what those writes made (for counters, see [`crate::counter`]).

use serde::Serialize;

use crate::clock::Timestamp;
use crate::counter::PnCounter;
use crate::dot::Dot;
use crate::json::Json;
use crate::mvreg::MvRegister;
use crate::register::LwwRegister;
use crate::set::OrSet;
use crate::store::{DotMap, DotStore, Join};

/// The kinds of value a key can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Map,
    Set,
    Counter,
    Register,
    MultiRegister,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Map => "map",
            Kind::Set => "set",
            Kind::Counter => "counter",
            Kind::Register => "register",
            Kind::MultiRegister => "multi-value register",
        })
    }
}

/// The value under one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub counter: PnCounter,
    pub register: LwwRegister<Json>,
    pub mv: MvRegister<Json>,
    pub set: OrSet<String>,
    pub map: Map,
}

impl Entry {
    /// The kind shown for this key, by precedence when writes of several kinds survive.
    pub fn kind(&self) -> Option<Kind> {
        if !self.map.is_bottom() {
            Some(Kind::Map)
        } else if !self.set.is_bottom() {
            Some(Kind::Set)
        } else if !self.counter.is_bottom() {
            Some(Kind::Counter)
        } else if !self.register.is_bottom() {
            Some(Kind::Register)
        } else if !self.mv.is_bottom() {
            Some(Kind::MultiRegister)
        } else {
            None
        }
    }

    /// The value as JSON: counters as integers, registers as their value, multi-value
    /// registers as arrays, sets as sorted arrays, maps as objects.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self.kind() {
            Some(Kind::Map) => self.map.to_json(),
            Some(Kind::Set) => {
                Value::Array(self.set.iter().map(|m| Value::String(m.clone())).collect())
            }
            Some(Kind::Counter) => counter_json(self.counter.value()),
            Some(Kind::Register) => self.register.value().map_or(Value::Null, Json::to_value),
            Some(Kind::MultiRegister) => {
                Value::Array(self.mv.values().into_iter().map(Json::to_value).collect())
            }
            None => Value::Null,
        }
    }

    /// Every LWW timestamp at any depth (for validating untrusted deltas).
    pub fn for_each_timestamp(&self, f: &mut dyn FnMut(Timestamp)) {
        self.register.timestamps().for_each(&mut *f);
        self.map.for_each_timestamp(f);
    }
}

fn counter_json(v: i128) -> serde_json::Value {
    if let Ok(i) = i64::try_from(v) {
        i.into()
    } else if let Ok(u) = u64::try_from(v) {
        u.into()
    } else {
        // Beyond what JSON numbers carry exactly: render the exact decimal as a string.
        serde_json::Value::String(v.to_string())
    }
}

impl DotStore for Entry {
    fn is_bottom(&self) -> bool {
        self.kind().is_none()
    }

    fn for_each_dot(&self, f: &mut dyn FnMut(&Dot)) {
        self.counter.for_each_dot(f);
        self.register.for_each_dot(f);
        self.mv.for_each_dot(f);
        self.set.for_each_dot(f);
        self.map.for_each_dot(f);
    }

    fn join(&mut self, other: &Self, j: &Join<'_>) {
        self.counter.join(&other.counter, j);
        self.register.join(&other.register, j);
        self.mv.join(&other.mv, j);
        self.set.join(&other.set, j);
        self.map.join(&other.map, j);
    }
}

/// A map from string keys to entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Map(pub(crate) DotMap<String, Entry>);

impl Map {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.0 .0.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A map of the given entries; bottom entries are left out.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Entry)>) -> Map {
        Map(DotMap(
            entries
                .into_iter()
                .filter(|(_, e)| !e.is_bottom())
                .collect(),
        ))
    }

    /// A map holding one key (used to wrap a nested delta).
    pub(crate) fn singleton(key: String, entry: Entry) -> Map {
        let mut m = Map::default();
        if !entry.is_bottom() {
            m.0 .0.insert(key, entry);
        }
        m
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.iter().map(|(k, e)| (k.clone(), e.to_json())).collect())
    }

    /// Deepest nesting of maps below this one (0 for a flat map).
    pub fn depth(&self) -> usize {
        self.iter()
            .map(|(_, e)| {
                if e.map.is_bottom() {
                    0
                } else {
                    1 + e.map.depth()
                }
            })
            .max()
            .unwrap_or(0)
    }

    pub fn for_each_timestamp(&self, f: &mut dyn FnMut(Timestamp)) {
        for (_, e) in self.iter() {
            e.for_each_timestamp(f);
        }
    }

    /// Visits every counter at any depth.
    pub fn for_each_counter(&self, f: &mut dyn FnMut(&PnCounter)) {
        for (_, e) in self.iter() {
            f(&e.counter);
            e.map.for_each_counter(f);
        }
    }
}

crate::store::forward_dot_store!(Map);
