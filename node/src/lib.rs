//! The Lattice daemon: configuration, identity, storage, documents, blobs, services and
//! the control socket.
//!
//! Not built yet: issue #3 adds the daemon and control socket, issue #4 the replicated
//! documents (driving `lattice_crdt::sync`), issue #6 blobs and services. It deliberately
//! exports nothing until then.
