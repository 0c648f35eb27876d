//! Local testnets for trying Lattice out: many nodes on one machine, faults on purpose.
//!
//! - [`sim`]: the deterministic simulator front end (`lattice testnet sim`), driving the
//!   `lattice-crdt` replication state machine for many virtual replicas in one process.
//!
//! Process testnets (spawn, kill, restart, partition, heal and wait for convergence of
//! real `lattice daemon`s) arrive with the daemon.

pub mod sim;
