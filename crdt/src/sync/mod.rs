//! The replication protocol, as a sans-IO state machine per document.
//!
//! - [`acl`]: a document's genesis and its access list (who may write).
//! - [`funnel`]: the checks every delta from a peer passes, cheapest first.
//! - [`message`]: signed deltas, summaries and batches; the [`Authenticator`] trait.
//! - [`log`]: the per-author delta log that anti-entropy serves from.
//! - [`interface`]: a replica's configuration, inputs, outputs, events and errors.
//! - [`replica`]: [`Replica`] itself.
//!
//! Fast path: a durable local write is broadcast as [`Message::Delta`]. Repair path
//! (anti-entropy): on every new peer and periodically with a random one, a replica sends
//! its version vector; the other answers with exactly the deltas it lacks, in bounded
//! batches, and with its own summary if it lacks something in turn.

pub mod acl;
pub mod funnel;
pub mod interface;
mod log;
pub mod message;
pub mod replica;
#[cfg(test)]
mod tests;

pub use acl::{Acl, AclChange, AclOp, Genesis, Standing};
pub use funnel::{verify, Verified};
pub use interface::{Config, Event, Input, Output, Stats, SyncError};
pub use message::{
    Authenticator, Message, SeqRange, SignedDelta, TestAuth, MAX_MESSAGE_BYTES, MAX_SEQ,
};
pub use replica::{Ack, Replica};
