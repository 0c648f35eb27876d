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

mod tables;

use std::path::Path;
use std::thread::JoinHandle;

use lattice_crdt::sync::SignedDelta;
use lattice_crdt::DocId;
use tokio::sync::{mpsc, oneshot};

pub use tables::{BlobMeta, Change, DocMeta, ServiceAd};

/// Requests waiting for the storage thread; writers wait when it is this far behind.
const QUEUE: usize = 1_024;
/// Most queued writes committed in one transaction.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage: {0}")]
    Db(#[from] redb::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("write not committed: {0}")]
    WriteFailed(String),
    #[error("the store has shut down")]
    Closed,
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

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
/// A queued write and where to acknowledge it.
type Write = (Vec<Change>, Reply<()>);

enum Job {
    PutDoc(DocMeta, Reply<()>),
    Docs(Reply<Vec<DocMeta>>),
    Persist(Vec<Change>, Reply<()>),
    Load(DocId, Reply<Vec<SignedDelta>>),
    PutBlob(BlobMeta, Reply<()>),
    DelBlob([u8; 32], Reply<()>),
    Blobs(Reply<Vec<BlobMeta>>),
    PutService(ServiceAd, Reply<()>),
    DelService(String, Reply<()>),
    Services(Reply<Vec<ServiceAd>>),
}

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
        let db = tables::open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("lattice-store".into())
            .spawn(move || run(db, rx))
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
        self.ask(|r| Job::PutDoc(meta, r)).await
    }

    pub async fn docs(&self) -> Result<Vec<DocMeta>, StoreError> {
        self.ask(Job::Docs).await
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
        self.ask(|r| Job::PutBlob(meta, r)).await
    }

    pub async fn del_blob(&self, hash: [u8; 32]) -> Result<(), StoreError> {
        self.ask(|r| Job::DelBlob(hash, r)).await
    }

    pub async fn blobs(&self) -> Result<Vec<BlobMeta>, StoreError> {
        self.ask(Job::Blobs).await
    }

    /// Records a service this node advertises (new, or with new metadata), durably.
    pub async fn put_service(&self, ad: ServiceAd) -> Result<(), StoreError> {
        self.ask(|r| Job::PutService(ad, r)).await
    }

    pub async fn del_service(&self, name: String) -> Result<(), StoreError> {
        self.ask(|r| Job::DelService(name, r)).await
    }

    pub async fn services(&self) -> Result<Vec<ServiceAd>, StoreError> {
        self.ask(Job::Services).await
    }

    /// Every delta stored for a document.
    pub async fn load(&self, doc: DocId) -> Result<Vec<SignedDelta>, StoreError> {
        self.ask(|r| Job::Load(doc, r)).await
    }
}

fn run(db: redb::Database, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        // Group the writes already waiting behind this one into a single commit.
        let mut writes = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Persist(d, reply) => writes.push((d, reply)),
                other => {
                    flush(&db, &mut writes);
                    answer(&db, other);
                }
            }
            if writes.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        flush(&db, &mut writes);
    }
}

fn flush(db: &redb::Database, writes: &mut Vec<Write>) {
    if writes.is_empty() {
        return;
    }
    let all: Vec<&Change> = writes.iter().flat_map(|(c, _)| c.iter()).collect();
    let result = tables::persist(db, &all);
    for (_, reply) in writes.drain(..) {
        let _ = reply.send(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::WriteFailed(e.to_string())),
        });
    }
}

fn answer(db: &redb::Database, job: Job) {
    match job {
        Job::PutDoc(meta, reply) => {
            let _ = reply.send(tables::put_doc(db, &meta));
        }
        Job::Docs(reply) => {
            let _ = reply.send(tables::docs(db));
        }
        Job::Load(doc, reply) => {
            let _ = reply.send(tables::load(db, &doc));
        }
        Job::PutBlob(meta, reply) => {
            let _ = reply.send(tables::put_blob(db, &meta));
        }
        Job::DelBlob(hash, reply) => {
            let _ = reply.send(tables::del_blob(db, &hash));
        }
        Job::Blobs(reply) => {
            let _ = reply.send(tables::blobs(db));
        }
        Job::PutService(ad, reply) => {
            let _ = reply.send(tables::put_service(db, &ad));
        }
        Job::DelService(name, reply) => {
            let _ = reply.send(tables::del_service(db, &name));
        }
        Job::Services(reply) => {
            let _ = reply.send(tables::services(db));
        }
        Job::Persist(..) => unreachable!("writes are batched by the caller"),
    }
}

#[cfg(test)]
mod tests;
