//! Trace ids: one per document write and per blob fetch, logged by every node where it
//! applies the write or serves the fetch, so `lattice testnet logs --trace ID` can show
//! one write's path through the network in time order.
//!
//! A write's id is derived from what already travels with its delta and names it
//! uniquely — document, author, sequence number — so it costs no bytes on the wire,
//! leaves the signed bytes (and so deduplication) alone, and every node computes the same
//! id for the same write whichever way (gossip or repair) it arrived. A fetch's id is
//! random and travels in its requests.
//!
//! Lines are logged at debug level under the target [`TARGET`]: `LATTICE_LOG=info,
//! lattice_trace=debug` turns them on (testnet nodes have them on).

use lattice_crdt::{ActorId, DocId};

/// The tracing target of trace lines.
pub const TARGET: &str = "lattice_trace";

/// The trace id of `author`'s write `seq` to `doc`: 16 hex digits.
pub fn write_id(doc: &DocId, author: &ActorId, seq: u64) -> String {
    let mut h = blake3::Hasher::new_derive_key("lattice 2026-11 write trace id");
    h.update(&doc.0);
    h.update(&author.0);
    h.update(&seq.to_le_bytes());
    hex16(h.finalize().as_bytes())
}

/// A fresh random trace id for a blob fetch.
pub fn fetch_id() -> u64 {
    rand::random()
}

/// A fetch's id as it is printed and logged: 16 hex digits.
pub fn show(id: u64) -> String {
    format!("{id:016x}")
}

fn hex16(b: &[u8; 32]) -> String {
    show(u64::from_be_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_has_one_id_everywhere_and_writes_differ() {
        let (doc, a, b) = (DocId([1; 32]), ActorId([2; 32]), ActorId([3; 32]));
        let id = write_id(&doc, &a, 7);
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, write_id(&doc, &a, 7));
        assert_ne!(id, write_id(&doc, &a, 8));
        assert_ne!(id, write_id(&doc, &b, 7));
        assert_ne!(id, write_id(&DocId([9; 32]), &a, 7));
        assert_eq!(show(0xab), "00000000000000ab");
    }
}
