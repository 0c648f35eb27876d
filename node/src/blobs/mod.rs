//! Blobs: files addressed by their BLAKE3 hash, stored with their BLAKE3 tree so that any
//! range can be verified alone, served to peers and fetched from many providers at once.
//!
//! - [`Blobs`]: the cloneable handle (add, get, ls, rm, pin, providers, serving).
//! - [`files`]: the on-disk layout; import, encode and verified decode (blocking IO).
//! - [`output`]: the file `blob get -o` writes, streamed or copied (blocking IO).
//! - `fetch`: finding providers and fetching verified ranges from several in parallel.
//! - [`wire`]: the `/lattice/blob/1` request and response.
//!
//! The index (size, complete, pinned, verified ranges of partial blobs) lives in redb and
//! in memory here; the bytes live in files under `<data>/blobs/`.

pub mod cid;
#[cfg(test)]
pub mod faults;
mod fetch;
pub mod files;
pub mod in_place;
mod intact;
pub mod output;
mod recover;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lattice_overlay::{Overlay, PeerId, Responder};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::now_ms;
use crate::store::{BlobMeta, Store, StoreError};
use files::Paths;
use wire::{BlobRequest, BlobResponse};

/// Chunks (1 KiB) being encoded for peers at once, all requests together: 64 MiB of
/// answers in memory at most (four fetchers with four 4 MiB pieces each in flight).
/// Beyond it, requests are answered "busy" and the fetcher asks again shortly. Once handed
/// to the overlay, an answer counts against the peer's budget there.
const MAX_SERVING_CHUNKS: usize = 64 << 10;
/// Liars remembered.
const MAX_BAD: usize = 4_096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("invalid blob hash {given:?}: expected 64 hex characters or a CID ({why})")]
    BadHash { given: String, why: String },
    #[error("no blob {0} here (see `lattice blob ls`)")]
    Unknown(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blob storage failed: {}", crate::store::said(.0))]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no provider of {0} found in the DHT")]
    NoProviders(String),
    #[error("fetch of {hash} failed: {why} ({verified} of {size} bytes verified and kept; run `lattice blob get` again to resume)")]
    Incomplete {
        hash: String,
        why: String,
        verified: u64,
        size: u64,
    },
    #[error("blob {0} is already being fetched")]
    Busy(String),
    #[error("the stored copy of blob {0} is corrupt (its bytes no longer hash to it); it was removed: fetch it again with `lattice blob get`")]
    Corrupt(String),
    #[error("the stored copy of blob {0} is gone from the data directory; it was forgotten: fetch it again with `lattice blob get`")]
    Missing(String),
    #[error("the stored copy of blob {0} was written to while it was copied out (through an earlier `-o` output made writable?); nothing was placed: run `lattice blob get` again")]
    Changed(String),
    #[error("cannot write {path}: {}", crate::store::said(.source))]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A blob held here, whole or in part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// BLAKE3 of the content.
    pub hash: [u8; 32],
    pub size: u64,
    pub complete: bool,
    pub pinned: bool,
    pub local: bool,
    /// Verified bytes (the size once complete).
    pub have: u64,
}

impl From<&BlobMeta> for BlobInfo {
    fn from(m: &BlobMeta) -> Self {
        BlobInfo {
            hash: m.hash,
            size: m.size,
            complete: m.complete,
            pinned: m.pinned,
            local: m.local,
            have: if m.complete {
                m.size
            } else {
                verified_bytes(&m.verified, m.size)
            },
        }
    }
}

/// Bytes covered by verified chunk ranges of a blob of `size` bytes.
pub fn verified_bytes(ranges: &[(u64, u64)], size: u64) -> u64 {
    ranges
        .iter()
        .map(|(s, e)| {
            (e * files::CHUNK)
                .min(size)
                .saturating_sub(s * files::CHUNK)
        })
        .sum()
}

/// What a fetch reports as it goes, and at its end.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Verified bytes so far, of `size`; `providers` are in use.
    Progress {
        have: u64,
        size: u64,
        providers: usize,
    },
    /// The blob is complete (and copied to `path` if one was asked for).
    Done {
        blob: BlobInfo,
        path: Option<PathBuf>,
        /// Bytes received from providers in this fetch, and pieces fetched again after a
        /// provider failed or lied.
        received: u64,
        retried: u64,
        bad_providers: Vec<PeerId>,
        trace: u64,
    },
    Failed {
        message: String,
        trace: u64,
    },
}

/// A blob's hash from its hex (64 characters, as `b3sum` prints) or its CID (`bafkr4…`).
pub fn parse_hash(s: &str) -> Result<[u8; 32], BlobError> {
    if s.len() == 64 {
        if let Ok(bytes) = data_encoding::HEXLOWER_PERMISSIVE.decode(s.as_bytes()) {
            if let Ok(hash) = bytes.try_into() {
                return Ok(hash);
            }
        }
    }
    cid::parse(s).map_err(|why| BlobError::BadHash {
        given: s.chars().take(100).collect(),
        why,
    })
}

struct Inner {
    dir: PathBuf,
    store: Store,
    overlay: Overlay,
    /// The index; never held across an await.
    index: Mutex<HashMap<[u8; 32], BlobMeta>>,
    fetching: Mutex<HashSet<[u8; 32]>>,
    /// Providers caught sending bytes that do not verify; later fetches skip them.
    bad: Mutex<HashSet<PeerId>>,
    serving: Arc<Semaphore>,
    quota: Option<u64>,
    /// Complete blobs whose bytes were hashed since this start (or that completed in it),
    /// with their data file's stamp then: served and copied out without hashing again
    /// while the stamp holds. It matters for a blob linked out by `blob get -o`, whose
    /// data file is also the user's file.
    intact: Mutex<HashMap<[u8; 32], files::Stamp>>,
    /// Blobs being hashed for that now, or waiting for a turn.
    checking: Mutex<HashSet<[u8; 32]>>,
    /// Turns to hash a blob for that ([`intact::MAX_CHECKING`]).
    hashing: Semaphore,
    /// Turns to check a file's stamp off the runtime ([`intact::MAX_STATS`]).
    stats: Semaphore,
    /// Complete blobs whose data file could not be read at their last check: refused at
    /// once for a minute ([`intact`]) or until the file changes, so that requests do not
    /// read a failing disk again and again.
    unreadable: Mutex<HashMap<[u8; 32], intact::Unreadable>>,
}

/// The handle to the blob store.
#[derive(Clone)]
pub struct Blobs(Arc<Inner>);

impl Blobs {
    /// Opens `<data>/blobs`, loads the index, and announces every complete blob.
    pub async fn open(
        data_dir: &Path,
        store: Store,
        overlay: Overlay,
        quota: Option<u64>,
    ) -> Result<Blobs, BlobError> {
        let dir = data_dir.join("blobs");
        std::fs::create_dir_all(&dir)?;
        let index = store
            .blobs()
            .await?
            .into_iter()
            .map(|m| (m.hash, m))
            .collect::<HashMap<_, _>>();
        let blobs = Blobs(Arc::new(Inner {
            dir,
            store,
            overlay,
            index: Mutex::new(index),
            fetching: Mutex::new(HashSet::new()),
            bad: Mutex::new(HashSet::new()),
            serving: Arc::new(Semaphore::new(MAX_SERVING_CHUNKS)),
            quota,
            intact: Mutex::new(HashMap::new()),
            checking: Mutex::new(HashSet::new()),
            hashing: Semaphore::new(intact::MAX_CHECKING),
            stats: Semaphore::new(intact::MAX_STATS),
            unreadable: Mutex::new(HashMap::new()),
        }));
        blobs.finish_interrupted().await?;
        blobs.forget_missing().await?;
        blobs.sort_leftovers().await?;
        for m in blobs.list() {
            if m.complete {
                blobs.announce(m.hash);
            }
        }
        blobs.collect().await?;
        Ok(blobs)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], BlobMeta>> {
        crate::lock(&self.0.index)
    }

    /// Drops a blob from the index, and its mark as intact: an add racing with this
    /// removal may leave it listed, and its next serve then hashes it again (and finds
    /// its files gone) rather than trusting a mark for files that are not there.
    fn forget(&self, hash: &[u8; 32]) {
        self.index().remove(hash);
        crate::lock(&self.0.intact).remove(hash);
        crate::lock(&self.0.unreadable).remove(hash);
    }

    pub fn count(&self) -> usize {
        self.index().values().filter(|m| m.complete).count()
    }

    pub fn list(&self) -> Vec<BlobInfo> {
        let mut v: Vec<BlobInfo> = self.index().values().map(BlobInfo::from).collect();
        v.sort_by_key(|b| b.hash);
        v
    }

    fn bad_providers(&self) -> HashSet<PeerId> {
        crate::lock(&self.0.bad).clone()
    }

    fn mark_bad(&self, peer: PeerId) {
        let mut bad = crate::lock(&self.0.bad);
        if bad.len() < MAX_BAD {
            bad.insert(peer);
        }
    }

    fn meta(&self, hash: &[u8; 32]) -> Option<BlobMeta> {
        self.index().get(hash).cloned()
    }

    fn paths(&self, hash: &[u8; 32]) -> Paths {
        Paths::new(&self.0.dir, hash)
    }

    async fn save(&self, meta: BlobMeta) -> Result<(), BlobError> {
        self.0.store.put_blob(meta.clone()).await?;
        self.index().insert(meta.hash, meta);
        Ok(())
    }

    /// Announces in the DHT that this node provides `hash` (in the background).
    fn announce(&self, hash: [u8; 32]) {
        let overlay = self.0.overlay.clone();
        tokio::spawn(async move {
            if let Err(e) = overlay.provide(crate::dht_keys::blob(&hash)).await {
                warn!(blob = %files::hex(&hash), "cannot announce the blob in the DHT: {e}");
            }
        });
    }

    /// Stores a copy of the file at `path`, streaming.
    pub async fn add(&self, path: PathBuf) -> Result<BlobInfo, BlobError> {
        let dir = self.0.dir.clone();
        let src = path.clone();
        let (hash, size, stamp) = tokio::task::spawn_blocking(move || files::import(&dir, &src))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .map_err(|e| match e {
                files::ImportError::Source(source) => BlobError::Read { path, source },
                files::ImportError::Store(e) => BlobError::Io(e),
            })?;
        let before = self.meta(&hash);
        let meta = BlobMeta {
            hash,
            size,
            complete: true,
            pinned: before.as_ref().is_some_and(|m| m.pinned),
            local: true,
            added_ms: now_ms(),
            verified: Vec::new(),
        };
        if let Err(e) = self.save(meta.clone()).await {
            // Not recorded, surely: the files go too, or start-up would find the blob
            // and record it, though this add was reported failed.
            if before.is_none() && matches!(e, BlobError::Store(StoreError::WriteFailed(_))) {
                let _ = self.paths(&hash).remove();
            }
            return Err(e);
        }
        // Its bytes were hashed on their way into the store: the first peer to ask for
        // it does not wait for them to be hashed again.
        self.mark_intact_since(hash, stamp).await;
        self.announce(hash);
        info!(blob = %files::hex(&hash), size, "blob added");
        Ok(BlobInfo::from(&meta))
    }

    pub async fn remove(&self, hash: &str) -> Result<BlobInfo, BlobError> {
        let h = parse_hash(hash)?;
        let meta = self
            .meta(&h)
            .ok_or_else(|| BlobError::Unknown(hash.to_owned()))?;
        self.0.store.del_blob(h).await?;
        self.forget(&h);
        self.paths(&h).remove()?;
        Ok(BlobInfo::from(&meta))
    }

    pub async fn pin(&self, hash: &str, pinned: bool) -> Result<BlobInfo, BlobError> {
        let h = parse_hash(hash)?;
        let mut meta = self
            .meta(&h)
            .ok_or_else(|| BlobError::Unknown(hash.to_owned()))?;
        meta.pinned = pinned;
        self.save(meta.clone()).await?;
        Ok(BlobInfo::from(&meta))
    }

    pub async fn providers(&self, hash: &str) -> Result<Vec<PeerId>, BlobError> {
        let h = parse_hash(hash)?;
        let me = self.0.overlay.peer_id();
        let mut found = crate::dht_keys::providers(&self.0.overlay, crate::dht_keys::blob(&h))
            .await
            .unwrap_or_default();
        found.retain(|p| *p != me);
        if self.meta(&h).is_some_and(|m| m.complete) {
            found.insert(0, me);
        }
        Ok(found)
    }

    /// The node's data directory (the blob directory's parent).
    pub fn data_dir(&self) -> PathBuf {
        self.0.dir.parent().unwrap_or(&self.0.dir).to_path_buf()
    }

    /// Refuses an output path inside the data directory (see [`output::check_output`]).
    pub fn check_output(&self, out: &Path) -> Result<(), BlobError> {
        output::check_output(out, &self.data_dir()).map_err(|source| BlobError::Output {
            path: out.to_path_buf(),
            source,
        })
    }

    /// Fetches blob `hash` (or finishes a partial fetch), reporting to `progress`; copies
    /// it to `out` if given. `trace` is the fetch's trace id, sent with its requests.
    pub async fn get(
        &self,
        hash: &str,
        out: Option<PathBuf>,
        progress: mpsc::Sender<Progress>,
        trace: u64,
    ) -> Result<(), BlobError> {
        let h = parse_hash(hash)?;
        if let Some(out) = &out {
            self.check_output(out)?;
        }
        if !crate::lock(&self.0.fetching).insert(h) {
            return Err(BlobError::Busy(hash.to_owned()));
        }
        let r = fetch::run(self, h, out, &progress, trace).await;
        crate::lock(&self.0.fetching).remove(&h);
        if r.is_ok() {
            self.announce(h);
            self.collect().await?;
        }
        r
    }

    /// Deletes unpinned fetched blobs, oldest first, while the store exceeds the quota.
    async fn collect(&self) -> Result<(), BlobError> {
        let Some(quota) = self.0.quota else {
            return Ok(());
        };
        let (mut total, mut victims) = {
            let index = self.index();
            let total: u64 = index.values().map(|m| m.size).sum();
            let mut v: Vec<BlobMeta> = index
                .values()
                .filter(|m| m.complete && !m.pinned && !m.local)
                .cloned()
                .collect();
            v.sort_by_key(|m| m.added_ms);
            (total, v)
        };
        victims.reverse();
        while total > quota {
            let Some(m) = victims.pop() else { break };
            if crate::lock(&self.0.fetching).contains(&m.hash) {
                continue;
            }
            info!(blob = %files::hex(&m.hash), size = m.size, quota, "collecting a blob over the quota");
            self.remove(&files::hex(&m.hash)).await?;
            total -= m.size;
        }
        Ok(())
    }

    /// Answers a `/lattice/blob/1` request (in its own task).
    pub fn serve(&self, peer: PeerId, data: Vec<u8>, mut responder: Responder) {
        let this = self.clone();
        tokio::spawn(async move {
            let resp = this.answer(peer, &data, &mut responder).await;
            let _ = this.0.overlay.respond(responder, resp.encode());
        });
    }

    async fn answer(&self, peer: PeerId, data: &[u8], responder: &mut Responder) -> BlobResponse {
        let req = match BlobRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                warn!(%peer, "malformed blob request: {e}");
                let _ = self.0.overlay.strike(peer);
                return BlobResponse::Refused(format!("malformed request: {e}"));
            }
        };
        let (hash, ranges, trace) = match req {
            BlobRequest::Size { hash, trace } => {
                let meta = self.meta(&hash);
                if let Some(t) = trace {
                    debug!(target: crate::trace::TARGET, trace = %crate::trace::show(t), %peer, blob = %files::hex(&hash), found = meta.is_some(), "asked for the size");
                }
                return match meta {
                    Some(m) => BlobResponse::Size(m.size),
                    None => BlobResponse::NotFound,
                };
            }
            BlobRequest::Ranges {
                hash,
                ranges,
                trace,
            } => (hash, ranges, trace),
        };
        let Some(meta) = self.meta(&hash) else {
            return BlobResponse::NotFound;
        };
        if meta.complete {
            match self.check_intact(hash).await {
                Ok(true) => {}
                Ok(false) => return BlobResponse::Refused("busy".into()),
                Err(_) => return BlobResponse::NotFound,
            }
        }
        let chunks = match wire::check_ranges(&ranges, meta.size.div_ceil(files::CHUNK)) {
            Ok(n) => n,
            Err(why) => return BlobResponse::Refused(why),
        };
        if let Some(t) = trace {
            debug!(target: crate::trace::TARGET, trace = %crate::trace::show(t), %peer, blob = %files::hex(&hash), ranges = ranges.len(), chunks, "asked for chunks");
        }
        // check_ranges bounds `chunks` by MAX_REQUEST_CHUNKS, far inside u32.
        let permits = u32::try_from(chunks).unwrap_or(u32::MAX);
        // The requester's share of answers in flight, reserved before the answer is built:
        // a peer that asks faster than it reads is told "busy" at no cost.
        if !responder.reserve(wire::encoded_bound(chunks)) {
            return BlobResponse::Refused("busy".into());
        }
        let Ok(_permit) = self.0.serving.clone().try_acquire_many_owned(permits) else {
            return BlobResponse::Refused("busy".into());
        };
        let paths = self.paths(&hash);
        let encoded =
            tokio::task::spawn_blocking(move || files::encode(&paths, &hash, meta.size, &ranges))
                .await;
        match encoded {
            Ok(Ok(bytes)) => BlobResponse::Encoded(bytes),
            _ => BlobResponse::NotFound,
        }
    }
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod intact_tests;
