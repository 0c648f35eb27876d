//! Local testnets for trying Lattice out: many nodes on one machine, faults on purpose.
//!
//! - [`daemon`]: one daemon as a child process — start, wait until ready, drive with the
//!   CLI, kill (on drop unless detached). End-to-end tests are built on it.
//! - [`manifest`]: `DIR/testnet.json`, the record of a testnet's nodes.
//! - [`net`]: process testnets — `up`, `status`, `kill`, `restart`, `partition`, `heal`,
//!   `logs`, `down`.
//! - [`netns`]: hosts in network namespaces, behind NATs, with capped links (root).
//! - [`topology`]: `testnet up --netns` and its topology file.
//! - [`bench`]: helpers for the benchmark binaries.
//! - [`converge`]: `wait-converged`, polling every live node's digest of a document.
//! - [`snapshot`]: `testnet snapshot`, a consistent global snapshot of a document.
//! - [`sim`]: the deterministic simulator front end (`lattice testnet sim`), driving the
//!   `lattice-crdt` replication state machine for many virtual replicas in one process.

pub mod bench;
pub mod converge;
pub mod daemon;
pub mod manifest;
pub mod net;
pub mod netns;
pub mod sim;
pub mod snapshot;
pub mod topology;
