//! Lattice's data model: conflict-free replicated documents that any replica may write
//! while offline or partitioned, and that converge once replicas talk again.
//!
//! No IO, no async runtime, no networking: everything here is deterministic, so it can be
//! tested exhaustively and simulated at scale. Time and randomness are passed in.
//!
//! Where to look:
//! - [`id`]: [`ActorId`] (a writer) and [`DocId`] (a document, base32).
//! - [`clock`]: the hybrid logical clock and its [`Timestamp`]s.
//! - [`dot`], [`vv`], [`ctx`]: dots, version vectors and causal contexts.
//! - [`store`]: dot stores, the causal join, and the [`Lattice`] trait.
//! - One file per CRDT type: [`counter`] (PN-counter), [`register`] (LWW register),
//!   [`mvreg`] (multi-value register), [`set`] (add-wins OR-set), [`map`] (OR-map).
//! - [`json`]: canonical JSON values held by registers.
//! - [`doc`]: [`Doc`], [`Op`] and deltas; JSON rendering and digests.
//! - [`check`]: validation of untrusted deltas (structure first, then against the state).
//! - [`wire`] and [`codec`]: the compact canonical encoding, and all CBOR.
//! - [`sync`]: the replication protocol as a sans-IO state machine ([`sync::Replica`]).
//! - [`sim`]: a deterministic many-replica network simulator driving [`sync`].
//! - [`fuzz`]: fuzz targets for every decoder, and a bounded stable fuzz pass.

pub mod check;
pub mod clock;
pub mod codec;
pub mod counter;
pub mod ctx;
pub mod doc;
pub mod dot;
pub mod fuzz;
pub mod id;
pub mod json;
pub mod lattice;
pub mod map;
pub mod mvreg;
pub mod register;
pub mod set;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;
pub mod sync;
pub mod vv;
pub mod wire;

pub use clock::{Hlc, Timestamp};
pub use ctx::CausalContext;
pub use doc::{Delta, Doc, DocError, Op, OpKind};
pub use dot::Dot;
pub use id::{ActorId, DocId};
pub use json::Json;
pub use lattice::Lattice;
pub use store::{Causal, DotStore};
pub use vv::VersionVector;
