//! The redb tables and the transactions over them.

use std::path::Path;

use lattice_crdt::sync::{Ack, Genesis, SignedDelta, MAX_MESSAGE_BYTES};
use lattice_crdt::ActorId;
use lattice_crdt::{codec, DocId};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Document id → metadata (CBOR).
const DOCS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("docs");
/// doc id ‖ author ‖ first seq (big-endian) → signed delta (CBOR).
const DELTAS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("deltas");
/// Blob hash → [`BlobMeta`] (CBOR).
const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
/// Service name → [`ServiceAd`] (CBOR).
const SERVICES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("services");
/// Peer id (bytes) → [`PeerRecord`] (CBOR).
const PEERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peers");
/// Document id → what its peer replicas last said they hold (CBOR list of (actor, ack)).
const ACKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("acks");

/// A peer met in this or an earlier run, kept so a restarted node can rejoin the network
/// without bootstrap addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer id, as bytes.
    #[serde(with = "serde_bytes")]
    pub id: Vec<u8>,
    /// Addresses it announced (multiaddrs, as bytes), best first.
    pub addrs: Vec<serde_bytes::ByteBuf>,
    /// When it was last seen connected or in the routing table.
    pub seen_ms: u64,
    /// It served this node as a relay.
    #[serde(default)]
    pub relay: bool,
}

/// A service this node advertises, kept across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAd {
    pub name: String,
    pub meta: std::collections::BTreeMap<String, String>,
}

/// What the node knows of a blob it holds (whole or in part).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    #[serde(with = "serde_bytes")]
    pub hash: [u8; 32],
    pub size: u64,
    /// Every byte is present and verified.
    pub complete: bool,
    /// Never collected under the quota.
    pub pinned: bool,
    /// Added on this node (`blob add`), not fetched: never collected either.
    pub local: bool,
    pub added_ms: u64,
    /// For a partial blob: verified chunk ranges `[start, end)` (1 KiB chunks), durable
    /// on disk, so a fetch resumes from them.
    #[serde(default)]
    pub verified: Vec<(u64, u64)>,
}

/// What a node knows of a document besides its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocMeta {
    /// Owner, name (the local alias), nonce, open or closed, first writers; its hash is
    /// the document id.
    pub genesis: Genesis,
    /// When this node created or joined the document.
    pub added_ms: u64,
}

impl DocMeta {
    pub fn id(&self) -> DocId {
        self.genesis.id()
    }
}

/// One change to the store, applied in order within a commit. Every write goes through
/// these, so every write is batched, retried and settled the same way (see `super::flush`).
#[derive(Clone, Debug)]
pub enum Change {
    /// Store a delta; it replaces the stored deltas of its author whose range it covers.
    Put(SignedDelta),
    /// Delete the deltas of `author` that reach past `after` (the writer was removed).
    Truncate {
        doc: DocId,
        author: ActorId,
        after: u64,
    },
    /// Record a document (new, or with changed metadata).
    PutDoc(DocMeta),
    /// Record a blob (new, or with changed metadata).
    PutBlob(BlobMeta),
    DelBlob([u8; 32]),
    /// Record a service this node advertises.
    PutService(ServiceAd),
    DelService(String),
    /// Record a peer met (new, or seen again).
    PutPeer(PeerRecord),
    /// Forget a peer (by id bytes).
    DelPeer(Vec<u8>),
    /// Record what a document's peer replicas hold (replacing what was recorded).
    PutAcks {
        doc: DocId,
        acks: Vec<(ActorId, Ack)>,
    },
}

/// Opens (or creates) the database with a cache of `cache` bytes (redb's own default is
/// 1 GiB, grown as pages are read: too much to leave unbounded on a small device).
pub(super) fn open(path: &Path, cache: usize) -> Result<redb::Database, StoreError> {
    init(redb::Builder::new().set_cache_size(cache).create(path)?)
}

/// Creates the tables a new database lacks.
pub(super) fn init(db: redb::Database) -> Result<redb::Database, StoreError> {
    let w = db.begin_write()?;
    w.open_table(DOCS)?;
    w.open_table(DELTAS)?;
    w.open_table(BLOBS)?;
    w.open_table(SERVICES)?;
    w.open_table(PEERS)?;
    w.open_table(ACKS)?;
    w.commit()?;
    Ok(db)
}

fn delta_key(d: &SignedDelta) -> [u8; 72] {
    key(&d.doc, &d.author.0, d.seqs.first)
}

fn key(doc: &DocId, author: &[u8; 32], first: u64) -> [u8; 72] {
    let mut k = [0u8; 72];
    k[..32].copy_from_slice(&doc.0);
    k[32..64].copy_from_slice(author);
    k[64..].copy_from_slice(&first.to_be_bytes());
    k
}

pub(super) fn docs(db: &redb::Database) -> Result<Vec<DocMeta>, StoreError> {
    let r = db.begin_read()?;
    let t = r.open_table(DOCS)?;
    let mut out = Vec::new();
    for row in t.range::<&[u8]>(..)? {
        let (_, v) = row?;
        out.push(
            codec::decode(v.value(), 1 << 20).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Applies changes in one transaction, in order, and commits it durably.
pub(super) fn persist(db: &redb::Database, changes: &[&Change]) -> Result<(), StoreError> {
    let w = db.begin_write()?;
    apply(&w, changes, &mut Touched::new())?;
    w.commit()?;
    Ok(())
}

/// Whether the store already holds what `changes` would make it hold: every row they
/// touch ends as it began. Used after a failed commit, on a freshly opened database, to
/// learn whether that commit reached the disk after all. Writes nothing.
pub(super) fn holds(db: &redb::Database, changes: &[&Change]) -> Result<bool, StoreError> {
    let w = db.begin_write()?;
    let mut touched = Touched::new();
    apply(&w, changes, &mut touched)?;
    let mut same = true;
    for ((table, key), before) in &touched {
        let t = w.open_table(TABLES[*table])?;
        let now = t.get(key.as_slice())?.map(|v| v.value().to_vec());
        same &= now == *before;
    }
    w.abort()?;
    Ok(same)
}

/// The tables, by index, for [`Touched`].
const TABLES: [Table; 6] = [DOCS, DELTAS, BLOBS, SERVICES, PEERS, ACKS];
const T_DOCS: usize = 0;
const T_DELTAS: usize = 1;
const T_BLOBS: usize = 2;
const T_SERVICES: usize = 3;
const T_PEERS: usize = 4;
const T_ACKS: usize = 5;

/// Each row a batch touched, with its value before the batch's first touch.
type Touched = std::collections::BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>;

/// Sets (or, with `None`, deletes) a row, remembering its value before the first touch.
fn set(
    t: &mut redb::Table<&[u8], &[u8]>,
    table: usize,
    key: &[u8],
    value: Option<&[u8]>,
    touched: &mut Touched,
) -> Result<(), StoreError> {
    let old = match value {
        Some(v) => t.insert(key, v)?.map(|o| o.value().to_vec()),
        None => t.remove(key)?.map(|o| o.value().to_vec()),
    };
    touched.entry((table, key.to_vec())).or_insert(old);
    Ok(())
}

/// Applies changes inside `w`, recording what they touch.
fn apply(
    w: &redb::WriteTransaction,
    changes: &[&Change],
    touched: &mut Touched,
) -> Result<(), StoreError> {
    let mut deltas = w.open_table(DELTAS)?;
    for c in changes {
        let (table, key, value) = match c {
            Change::Put(d) => {
                put_delta(&mut deltas, d, touched)?;
                continue;
            }
            Change::Truncate { doc, author, after } => {
                let lo = key(doc, &author.0, 0);
                let hi = key(doc, &author.0, u64::MAX);
                let mut doomed = Vec::new();
                for row in deltas.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
                    let (k, v) = row?;
                    if decode_delta(v.value())?.seqs.last > *after {
                        doomed.push(k.value().to_vec());
                    }
                }
                for k in &doomed {
                    set(&mut deltas, T_DELTAS, k, None, touched)?;
                }
                continue;
            }
            Change::PutDoc(meta) => (T_DOCS, meta.id().0.to_vec(), Some(codec::encode(meta))),
            Change::PutBlob(meta) => (T_BLOBS, meta.hash.to_vec(), Some(codec::encode(meta))),
            Change::DelBlob(hash) => (T_BLOBS, hash.to_vec(), None),
            Change::PutService(ad) => (
                T_SERVICES,
                ad.name.as_bytes().to_vec(),
                Some(codec::encode(ad)),
            ),
            Change::DelService(name) => (T_SERVICES, name.as_bytes().to_vec(), None),
            Change::PutPeer(p) => (T_PEERS, p.id.clone(), Some(codec::encode(p))),
            Change::DelPeer(id) => (T_PEERS, id.clone(), None),
            Change::PutAcks { doc, acks } => (T_ACKS, doc.0.to_vec(), Some(codec::encode(acks))),
        };
        let mut t = w.open_table(TABLES[table])?;
        set(&mut t, table, &key, value.as_deref(), touched)?;
    }
    Ok(())
}

/// Stores a delta in place of the ones of its author it covers.
fn put_delta(
    t: &mut redb::Table<&[u8], &[u8]>,
    d: &SignedDelta,
    touched: &mut Touched,
) -> Result<(), StoreError> {
    let own = delta_key(d);
    let mut covered = Vec::new();
    if d.seqs.first < d.seqs.last {
        let lo = key(&d.doc, &d.author.0, d.seqs.first);
        let hi = key(&d.doc, &d.author.0, d.seqs.last);
        for row in t.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
            let (k, v) = row?;
            let old: SignedDelta = decode_delta(v.value())?;
            if k.value() != own.as_slice() && d.seqs.covers(&old.seqs) {
                covered.push(k.value().to_vec());
            }
        }
    }
    for k in &covered {
        set(t, T_DELTAS, k, None, touched)?;
    }
    set(t, T_DELTAS, &own, Some(&codec::encode(d)), touched)
}

fn decode_delta(bytes: &[u8]) -> Result<SignedDelta, StoreError> {
    codec::decode(bytes, MAX_MESSAGE_BYTES).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn load(db: &redb::Database, doc: &DocId) -> Result<Vec<SignedDelta>, StoreError> {
    let r = db.begin_read()?;
    let t = r.open_table(DELTAS)?;
    let lo = key(doc, &[0; 32], 0);
    let hi = key(doc, &[0xff; 32], u64::MAX);
    let mut out = Vec::new();
    for row in t.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (_, v) = row?;
        out.push(decode_delta(v.value())?);
    }
    Ok(out)
}

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// What to do with a record that does not decode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Damaged {
    /// The store is corrupt: say so.
    Fail,
    /// The table is a cache: skip the record, with a warning.
    Skip,
}

/// Every record of a table, decoded (at most `max` bytes each).
fn rows<T: serde::de::DeserializeOwned>(
    db: &redb::Database,
    table: Table,
    max: usize,
    damaged: Damaged,
) -> Result<Vec<T>, StoreError> {
    let r = db.begin_read()?;
    let t = match r.open_table(table) {
        Ok(t) => t,
        // A table is created by its first write: none yet, nothing in it.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for row in t.range::<&[u8]>(..)? {
        let (_, v) = row?;
        match codec::decode(v.value(), max) {
            Ok(record) => out.push(record),
            Err(e) if damaged == Damaged::Skip => {
                tracing::warn!(table = %table, "skipping a damaged record: {e}")
            }
            Err(e) => return Err(StoreError::Corrupt(e.to_string())),
        }
    }
    Ok(out)
}

pub(super) fn blobs(db: &redb::Database) -> Result<Vec<BlobMeta>, StoreError> {
    rows(db, BLOBS, 64 << 20, Damaged::Fail)
}

pub(super) fn services(db: &redb::Database) -> Result<Vec<ServiceAd>, StoreError> {
    rows(db, SERVICES, 64 << 10, Damaged::Fail)
}

/// The kept peers; a record that does not decode is skipped (they are a cache: losing one
/// costs a dial, refusing to start would cost the node).
pub(super) fn peers(db: &redb::Database) -> Result<Vec<PeerRecord>, StoreError> {
    rows(db, PEERS, 64 << 10, Damaged::Skip)
}

/// What `doc`'s peer replicas last said they hold; nothing if unrecorded or damaged (a
/// hint: without it the node compacts as if it had no peers, which changes no state).
pub(super) fn acks(db: &redb::Database, doc: &DocId) -> Result<Vec<(ActorId, Ack)>, StoreError> {
    let r = db.begin_read()?;
    let t = match r.open_table(ACKS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let Some(v) = t.get(doc.0.as_slice())? else {
        return Ok(Vec::new());
    };
    Ok(codec::decode(v.value(), 64 << 20).unwrap_or_else(|e| {
        tracing::warn!(doc = %doc, "skipping damaged peer acknowledgements: {e}");
        Vec::new()
    }))
}
