//! Durable storage in `<data>/lattice.redb`, run on its own thread.
//!
//! Holds documents' metadata and every delta a node keeps (its own and its peers'), keyed
//! by document, author and first sequence number. A write is acknowledged only after its
//! transaction has committed with immediate durability (fsync), so nothing acknowledged is
//! lost to `kill -9` or power loss. Writes that queue up while a commit is in progress are
//! committed together, one fsync for the lot.
//!
//! The thread owns the database; callers talk to it through a bounded channel and get
//! their answers on oneshot channels, so no async task ever blocks on the disk.
//!
//! A failed commit is settled before anyone hears of it (see `Disk::commit`): on a full
//! disk the store is reopened and asked whether the commit landed after all, and writing
//! resumes once space is freed; after any other I/O error the outcome is reported unknown
//! and the store stops until the daemon restarts, since the disk may have lost what it
//! already acknowledged.
//!
mod tables;

use std::path::Path;
use std::thread::JoinHandle;

use lattice_crdt::sync::SignedDelta;
use lattice_crdt::DocId;
use tokio::sync::{mpsc, oneshot};

pub use tables::{BlobMeta, Change, DocMeta, PeerRecord, ServiceAd};

/// Requests waiting for the storage thread; writers wait when it is this far behind.
const QUEUE: usize = 1_024;
/// Bytes of the database kept in memory unless configured (`store_cache`).
pub const DEFAULT_CACHE: usize = 64 << 20;
/// Most queued writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Times a failed commit is tried again once the reopened store shows it did not land.
const RETRIES: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage: {0}")]
    Db(#[from] redb::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The write is not in the store (checked after the failure).
    #[error("write not committed: {0}")]
    WriteFailed(String),
    /// The disk failed during the commit and the store could not be read back: the write
    /// may or may not be stored.
    #[error("write may not be stored (the disk failed during the commit): {0}")]
    Unknown(String),
    #[error("the store has shut down")]
    Closed,
    /// The disk failed a write; the store takes no more requests until the daemon
    /// restarts (see `Disk::commit`).
    #[error("the store stopped after a disk error ({0}); check the disk, then restart the daemon")]
    Stopped(String),
    #[error("cannot start the storage thread: {0}")]
    Thread(std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl StoreError {
    /// The same failure, for another writer of the same batch.
    pub fn again(&self) -> StoreError {
        match self {
            StoreError::Unknown(m) => StoreError::Unknown(m.clone()),
            StoreError::Closed => StoreError::Closed,
            StoreError::WriteFailed(m) => StoreError::WriteFailed(m.clone()),
            other => StoreError::WriteFailed(other.to_string()),
        }
    }

    /// The failure in words a user acts on: a full disk says so first.
    fn told(&self) -> String {
        match self {
            StoreError::Db(redb::Error::Io(e)) if e.kind() == std::io::ErrorKind::StorageFull => {
                format!("disk full: {self}")
            }
            _ => self.to_string(),
        }
    }
}

/// An I/O error in words a user acts on: a full disk says so first.
pub fn said(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        format!("disk full: {e}")
    } else {
        e.to_string()
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
/// A queued write and where to acknowledge it.
type Write = (Vec<Change>, Reply<()>);

enum Job {
    Persist(Vec<Change>, Reply<()>),
    Read(Read),
}

enum Read {
    Docs(Reply<Vec<DocMeta>>),
    Load(DocId, Reply<Vec<SignedDelta>>),
    Acks(
        DocId,
        Reply<Vec<(lattice_crdt::ActorId, lattice_crdt::sync::Ack)>>,
    ),
    Blobs(Reply<Vec<BlobMeta>>),
    Services(Reply<Vec<ServiceAd>>),
    Peers(Reply<Vec<PeerRecord>>),
}

/// Opens the database: the file in a daemon; a disk that fails on purpose in tests.
pub type Opener = Box<dyn Fn() -> Result<redb::Database, StoreError> + Send>;

/// The handle to the storage thread. Dropping every handle stops the thread after it has
/// finished (and committed) what was queued.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
}

/// Joins the storage thread on shutdown.
pub struct StoreThread(Option<JoinHandle<()>>);

impl StoreThread {
    /// Waits for the thread to commit what was queued and exit. Call after dropping every
    /// [`Store`] handle.
    pub fn join(mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the database and starts its thread.
    pub fn open(path: &Path) -> Result<(Store, StoreThread), StoreError> {
        Store::open_cached(path, DEFAULT_CACHE)
    }

    /// Opens the database keeping at most `cache` bytes of it in memory.
    pub fn open_cached(path: &Path, cache: usize) -> Result<(Store, StoreThread), StoreError> {
        let path = path.to_path_buf();
        Store::open_with(Box::new(move || tables::open(&path, cache)))
    }

    /// Opens the database with `open` (again after every failure) and starts its thread.
    pub fn open_with(open: Opener) -> Result<(Store, StoreThread), StoreError> {
        let db = open()?;
        let disk = Disk {
            open,
            db: Some(db),
            stopped: None,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("lattice-store".into())
            .spawn(move || run(disk, rx))
            .map_err(StoreError::Thread)?;
        Ok((Store { tx }, StoreThread(Some(thread))))
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a document (new, or with changed metadata).
    pub async fn put_doc(&self, meta: DocMeta) -> Result<(), StoreError> {
        self.write(Change::PutDoc(meta)).await
    }

    pub async fn docs(&self) -> Result<Vec<DocMeta>, StoreError> {
        self.ask(|r| Job::Read(Read::Docs(r))).await
    }

    /// One change, durably.
    async fn write(&self, change: Change) -> Result<(), StoreError> {
        self.enqueue(vec![change]).await?.await
    }

    /// Makes deltas durable, in order; returns once they are committed.
    pub async fn persist(&self, deltas: Vec<SignedDelta>) -> Result<(), StoreError> {
        let changes = deltas.into_iter().map(Change::Put).collect();
        self.enqueue(changes).await?.await
    }

    /// Queues changes behind everything queued before (waiting only while the queue is
    /// full) and returns a future that resolves once they are committed. Commits happen
    /// in queue order, so when one resolves, everything queued before it is durable too.
    pub async fn enqueue(
        &self,
        changes: Vec<Change>,
    ) -> Result<impl std::future::Future<Output = Result<(), StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Persist(changes, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(async move { rx.await.map_err(|_| StoreError::Closed)? })
    }

    /// Records a blob (new, or with changed metadata), durably.
    pub async fn put_blob(&self, meta: BlobMeta) -> Result<(), StoreError> {
        self.write(Change::PutBlob(meta)).await
    }

    pub async fn del_blob(&self, hash: [u8; 32]) -> Result<(), StoreError> {
        self.write(Change::DelBlob(hash)).await
    }

    pub async fn blobs(&self) -> Result<Vec<BlobMeta>, StoreError> {
        self.ask(|r| Job::Read(Read::Blobs(r))).await
    }

    /// Records a service this node advertises (new, or with new metadata), durably.
    pub async fn put_service(&self, ad: ServiceAd) -> Result<(), StoreError> {
        self.write(Change::PutService(ad)).await
    }

    pub async fn del_service(&self, name: String) -> Result<(), StoreError> {
        self.write(Change::DelService(name)).await
    }

    pub async fn services(&self) -> Result<Vec<ServiceAd>, StoreError> {
        self.ask(|r| Job::Read(Read::Services(r))).await
    }

    /// The peers kept from earlier runs.
    pub async fn peers(&self) -> Result<Vec<PeerRecord>, StoreError> {
        self.ask(|r| Job::Read(Read::Peers(r))).await
    }

    /// Records and forgets known peers, in one commit.
    pub async fn save_peers(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.enqueue(changes).await?.await
    }

    /// Every delta stored for a document.
    pub async fn load(&self, doc: DocId) -> Result<Vec<SignedDelta>, StoreError> {
        self.ask(|r| Job::Read(Read::Load(doc, r))).await
    }

    /// What a document's peer replicas last said they hold, as saved.
    pub async fn acks(
        &self,
        doc: DocId,
    ) -> Result<Vec<(lattice_crdt::ActorId, lattice_crdt::sync::Ack)>, StoreError> {
        self.ask(|r| Job::Read(Read::Acks(doc, r))).await
    }
}

/// The database and the way to open it again.
struct Disk {
    open: Opener,
    /// None after an I/O failure, until the next request reopens it.
    db: Option<redb::Database>,
    /// Set after an I/O error other than a full disk: writes are refused from then on
    /// (see [`Disk::commit`]).
    stopped: Option<String>,
}

/// What a failure says about the disk.
enum Failure {
    /// Out of space: nothing of the failed write reached the disk, and retrying once
    /// space is freed is safe.
    Full,
    /// Any other I/O error: the disk may have lost what it acknowledged (Linux may drop
    /// pages whose writeback failed and report success on the next fsync).
    Io,
    /// Not the disk (a record that does not decode, a value too large): the transaction
    /// was dropped before it committed, so nothing was written.
    Other,
}

fn failure(e: &StoreError) -> Failure {
    match e {
        StoreError::Db(redb::Error::Io(io)) if io.kind() == std::io::ErrorKind::StorageFull => {
            Failure::Full
        }
        StoreError::Db(redb::Error::Io(_) | redb::Error::PreviousIo) => Failure::Io,
        _ => Failure::Other,
    }
}

impl Disk {
    /// Runs `f` on the database, opening it first if a failure closed it. An I/O failure
    /// closes it: redb refuses everything after one until it is reopened.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&redb::Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(why) = &self.stopped {
            return Err(StoreError::Stopped(why.clone()));
        }
        let db = match self.db.take() {
            Some(db) => db,
            None => (self.open)()?,
        };
        let result = f(&db);
        match &result {
            Err(e) if !matches!(failure(e), Failure::Other) => drop(db),
            _ => self.db = Some(db),
        }
        result
    }

    /// Commits a batch and settles a failure before anyone hears of it:
    ///
    /// - a full disk: the store is reopened and asked whether the batch is in it (it may
    ///   be, if only a later step failed); if not, it is tried once more; a batch still
    ///   missing is reported failed, and writing resumes once space is freed;
    /// - another I/O error: the outcome is unknown, and the store stops (every later
    ///   request fails) until the daemon restarts. It is not even reopened: after a failed
    ///   fsync Linux may drop the unwritten pages yet read them back from its cache, so a
    ///   reopen would repair the database on top of pages the disk never got;
    /// - anything else: the transaction was dropped before it committed: failed.
    fn commit(&mut self, batch: &[&Change]) -> Result<(), StoreError> {
        if let Some(why) = &self.stopped {
            return Err(StoreError::WriteFailed(
                StoreError::Stopped(why.clone()).to_string(),
            ));
        }
        let mut failed = match self.with(|db| tables::persist(db, batch)) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let mut tries = 1;
        loop {
            match failure(&failed) {
                Failure::Other => return Err(StoreError::WriteFailed(failed.told())),
                Failure::Io => {
                    tracing::error!("the disk failed a write; the store stops until the daemon restarts: {failed}");
                    self.db = None;
                    self.stopped = Some(failed.to_string());
                    return Err(StoreError::Unknown(format!(
                        "{}; the store stopped until the daemon restarts",
                        failed.told()
                    )));
                }
                Failure::Full => {}
            }
            match self.with(|db| tables::holds(db, batch)) {
                Ok(true) => return Ok(()),
                Ok(false) if tries > RETRIES => return Err(StoreError::WriteFailed(failed.told())),
                Ok(false) => {}
                Err(e) => {
                    return Err(StoreError::Unknown(format!(
                        "{}; reading the store back: {}",
                        failed.told(),
                        e.told()
                    )))
                }
            }
            tries += 1;
            match self.with(|db| tables::persist(db, batch)) {
                Ok(()) => return Ok(()),
                Err(e) => failed = e,
            }
        }
    }
}

fn run(mut disk: Disk, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        // Group the writes already waiting behind this one into a single commit.
        let mut writes = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Persist(d, reply) => writes.push((d, reply)),
                Job::Read(read) => {
                    flush(&mut disk, &mut writes);
                    answer(&mut disk, read);
                }
            }
            if writes.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        flush(&mut disk, &mut writes);
    }
}

fn flush(disk: &mut Disk, writes: &mut Vec<Write>) {
    if writes.is_empty() {
        return;
    }
    let all: Vec<&Change> = writes.iter().flat_map(|(c, _)| c.iter()).collect();
    let result = disk.commit(&all);
    for (_, reply) in writes.drain(..) {
        let _ = reply.send(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(e.again()),
        });
    }
}

fn answer(disk: &mut Disk, read: Read) {
    match read {
        Read::Docs(reply) => {
            let _ = reply.send(disk.with(tables::docs));
        }
        Read::Load(doc, reply) => {
            let _ = reply.send(disk.with(|db| tables::load(db, &doc)));
        }
        Read::Acks(doc, reply) => {
            let _ = reply.send(disk.with(|db| tables::acks(db, &doc)));
        }
        Read::Blobs(reply) => {
            let _ = reply.send(disk.with(tables::blobs));
        }
        Read::Services(reply) => {
            let _ = reply.send(disk.with(tables::services));
        }
        Read::Peers(reply) => {
            let _ = reply.send(disk.with(tables::peers));
        }
    }
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
pub(crate) mod faulty;

#[cfg(test)]
impl Store {
    /// A store on a disk in memory that fails when told to (see [`faulty`]).
    pub(crate) fn open_faulty(
        disk: &faulty::FaultyDisk,
    ) -> Result<(Store, StoreThread), StoreError> {
        let disk = disk.clone();
        Store::open_with(Box::new(move || {
            let db = redb::Builder::new().create_with_backend(disk.clone())?;
            tables::init(db)
        }))
    }
}
#[cfg(test)]
mod tests;
