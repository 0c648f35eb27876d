//! The redb tables and the transactions over them.

use std::path::Path;

use lattice_crdt::sync::{Genesis, SignedDelta, MAX_MESSAGE_BYTES};
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

/// One change to the stored deltas, applied in order within a commit.
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
}

pub(super) fn open(path: &Path) -> Result<redb::Database, StoreError> {
    let db = redb::Database::create(path)?;
    let w = db.begin_write()?;
    w.open_table(DOCS)?;
    w.open_table(DELTAS)?;
    w.open_table(BLOBS)?;
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

pub(super) fn put_doc(db: &redb::Database, meta: &DocMeta) -> Result<(), StoreError> {
    let w = db.begin_write()?;
    w.open_table(DOCS)?
        .insert(meta.id().0.as_slice(), codec::encode(meta).as_slice())?;
    w.commit()?;
    Ok(())
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

/// Applies changes in one transaction, in order.
pub(super) fn persist(db: &redb::Database, changes: &[&Change]) -> Result<(), StoreError> {
    let w = db.begin_write()?;
    {
        let mut t = w.open_table(DELTAS)?;
        for c in changes {
            let d = match c {
                Change::Put(d) => d,
                Change::Truncate { doc, author, after } => {
                    let lo = key(doc, &author.0, 0);
                    let hi = key(doc, &author.0, u64::MAX);
                    let mut doomed = Vec::new();
                    for row in t.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
                        let (k, v) = row?;
                        if decode_delta(v.value())?.seqs.last > *after {
                            doomed.push(k.value().to_vec());
                        }
                    }
                    for k in doomed {
                        t.remove(k.as_slice())?;
                    }
                    continue;
                }
            };
            if d.seqs.first < d.seqs.last {
                let lo = key(&d.doc, &d.author.0, d.seqs.first);
                let hi = key(&d.doc, &d.author.0, d.seqs.last);
                let mut covered = Vec::new();
                for row in t.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
                    let (k, v) = row?;
                    let old: SignedDelta = decode_delta(v.value())?;
                    if d.seqs.covers(&old.seqs) {
                        covered.push(k.value().to_vec());
                    }
                }
                for k in covered {
                    t.remove(k.as_slice())?;
                }
            }
            t.insert(delta_key(d).as_slice(), codec::encode(d).as_slice())?;
        }
    }
    w.commit()?;
    Ok(())
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

/// Writes one record, durably.
fn put_row(db: &redb::Database, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
    let w = db.begin_write()?;
    w.open_table(table)?.insert(key, value)?;
    w.commit()?;
    Ok(())
}

/// Deletes one record, durably.
fn del_row(db: &redb::Database, table: Table, key: &[u8]) -> Result<(), StoreError> {
    let w = db.begin_write()?;
    w.open_table(table)?.remove(key)?;
    w.commit()?;
    Ok(())
}

/// Every record of a table, decoded (at most `max` bytes each).
fn rows<T: serde::de::DeserializeOwned>(
    db: &redb::Database,
    table: Table,
    max: usize,
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
        out.push(codec::decode(v.value(), max).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    Ok(out)
}

pub(super) fn put_blob(db: &redb::Database, meta: &BlobMeta) -> Result<(), StoreError> {
    put_row(db, BLOBS, &meta.hash, &codec::encode(meta))
}

pub(super) fn del_blob(db: &redb::Database, hash: &[u8; 32]) -> Result<(), StoreError> {
    del_row(db, BLOBS, hash)
}

pub(super) fn blobs(db: &redb::Database) -> Result<Vec<BlobMeta>, StoreError> {
    rows(db, BLOBS, 64 << 20)
}

pub(super) fn put_service(db: &redb::Database, ad: &ServiceAd) -> Result<(), StoreError> {
    put_row(db, SERVICES, ad.name.as_bytes(), &codec::encode(ad))
}

pub(super) fn del_service(db: &redb::Database, name: &str) -> Result<(), StoreError> {
    del_row(db, SERVICES, name.as_bytes())
}

pub(super) fn services(db: &redb::Database) -> Result<Vec<ServiceAd>, StoreError> {
    rows(db, SERVICES, 64 << 10)
}
