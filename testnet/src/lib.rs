//! Local testnets for trying Lattice out: many nodes on one machine, faults on purpose.
//!
//! - [`net`]: real daemons as child processes — start, wait until ready, drive with the
//!   CLI, kill (always, on drop). End-to-end tests are built on it.
//! - [`sim`]: the deterministic simulator front end (`lattice testnet sim`), driving the
//!   `lattice-crdt` replication state machine for many virtual replicas in one process.
//!
//! The `lattice testnet up | down | kill | partition | ...` commands grow from [`net`].

pub mod net;
pub mod sim;
