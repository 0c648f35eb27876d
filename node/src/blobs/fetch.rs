//! Fetching a blob: providers from the DHT, the size proven by the last chunk, then 4 MiB
//! pieces requested from every provider in parallel (a few in flight each), each verified
//! against the BLAKE3 tree before it is written. A provider whose bytes do not verify is
//! dropped at its first bad piece (and skipped by later fetches); a provider that fails
//! or vanishes loses only its pieces in flight, which go to the others. Verified ranges
//! are recorded durably every few pieces, so an interrupted fetch resumes from them.
//!
//! - `probe`: the size and its proof, the first answers of a fresh fetch.
//! - `sinks`: where verified bytes go (the store, and a `-o` output) and their syncs.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lattice_overlay::{Overlay, PeerId, Protocol};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::files::{self, DecodeFailure, Paths, CHUNK};
use super::output::{self, Output, Verdict};
use super::wire::{BlobRequest, BlobResponse};
use super::{verified_bytes, BlobError, BlobInfo, Blobs, Progress};
use crate::store::BlobMeta;
use sinks::{joined, start_sync, Sinks};

mod probe;
mod sinks;

/// Chunks per piece: 4 MiB, moved as one response (large writes keep TCP + Noise + Yamux
/// near their best).
const PIECE: u64 = 4 * 1024;
/// Requests in flight to one provider.
const PER_PROVIDER: usize = 4;
/// Providers used at once.
const MAX_PROVIDERS: usize = 8;
/// Failed requests (not lies) before a provider is dropped from this fetch.
const MAX_FAILURES: u32 = 3;
/// Pieces verified between durable records of the verified ranges (32 MiB).
const SAVE_EVERY: usize = 8;
/// One piece must arrive this fast. Up to [`PER_PROVIDER`] pieces share a provider's
/// uplink: 16 MiB in 120 s serves from uplinks down to about 1 Mbit/s (the overlay's bulk
/// request deadline is the same). A provider that goes away fails at once, not at this.
const PIECE_TIMEOUT: Duration = Duration::from_secs(120);
/// A size request, or one for at most [`PROBE_CHUNKS`] chunks (the last chunk that proves
/// the size), must be answered this fast.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// One BLAKE3 tree block ([`files::BLOCK`], 64 KiB): the smallest range that verifies.
const PROBE_CHUNKS: u64 = 64;
/// A provider that answers "busy" (its serving budget, or ours with it, is used up) is
/// asked again after this pause, which keeps the piece's slot.
const BUSY_PAUSE: Duration = Duration::from_millis(250);
/// "Busy" answers in a row (about 30 s of them) after which a provider counts as failing.
const MAX_BUSY: u32 = 120;
/// The error text of a "busy" answer.
const BUSY: &str = "busy";

/// Why a piece did not come from a provider.
#[derive(Debug)]
enum Miss {
    /// It is serving others; ask again soon.
    Busy,
    /// It does not hold the blob (any more).
    NotFound,
    /// The request failed (timeout, closed stream, an answer that makes no sense).
    Failed(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Busy => f.write_str("busy"),
            Miss::NotFound => f.write_str("does not hold the blob"),
            Miss::Failed(why) => f.write_str(why),
        }
    }
}

struct Provider {
    peer: PeerId,
    in_flight: usize,
    failures: u32,
    /// "Busy" answers in a row: not a failure, until there are too many.
    busy: u32,
    dropped: bool,
}

/// A fetch in progress.
struct Fetch<'a> {
    blobs: &'a Blobs,
    overlay: Overlay,
    hash: [u8; 32],
    meta: BlobMeta,
    paths: Paths,
    providers: Vec<Provider>,
    bad: Vec<PeerId>,
    received: u64,
    retried: u64,
    /// The fetch's trace id, sent with every request.
    trace: u64,
    /// The `-o` file a fresh fetch writes as it goes.
    output: Option<Output>,
}

/// A piece request's end: the provider, the piece, and either the bytes received with
/// what verifying them gave, or why nothing came.
type Arrived = (
    usize,
    (u64, u64),
    Result<(u64, Result<(), DecodeFailure>), Miss>,
);

pub(super) async fn run(
    blobs: &Blobs,
    hash: [u8; 32],
    out: Option<PathBuf>,
    progress: &mpsc::Sender<Progress>,
    trace: u64,
) -> Result<(), BlobError> {
    let hex = files::hex(&hash);
    debug!(target: crate::trace::TARGET, trace = %crate::trace::show(trace), blob = %hex, "fetch started");
    let paths = blobs.paths(&hash);
    let existing = blobs.meta(&hash);
    let mut f = Fetch {
        blobs,
        overlay: blobs.0.overlay.clone(),
        hash,
        meta: existing.clone().unwrap_or(BlobMeta {
            hash,
            size: 0,
            complete: false,
            pinned: false,
            local: false,
            added_ms: super::now_ms(),
            verified: Vec::new(),
        }),
        paths,
        providers: Vec::new(),
        bad: Vec::new(),
        received: 0,
        retried: 0,
        trace,
        output: None,
    };
    let mut placed = None;
    if !f.meta.complete {
        f.find_providers().await?;
        if existing.is_none() {
            // Nothing held yet: every piece arrives in this fetch. On the store's file
            // system the output is linked to the store's copy once it is whole (below);
            // elsewhere it is written as the store is, and no copy follows. Created now
            // either way, so that an output that cannot be written fails at once.
            if let Some(to) = &out {
                let (path, dir) = (to.clone(), blobs.data_dir());
                let store = blobs.0.dir.clone();
                f.output = output_io(to, move || {
                    let output = Output::create(&path, &dir)?;
                    Ok((!output.beside(&store)?).then_some(output))
                })
                .await?;
            }
            f.prove_size().await?;
        }
        f.fetch_pieces(progress).await?;
        if let (Some(output), Some(to)) = (f.output.take(), &out) {
            placed = Some(output_io(to, move || output.place()).await?);
        }
    }
    let path = match out {
        _ if placed.is_some() => placed,
        Some(out) => {
            // Hashed on the way out unless it is intact: a stored copy damaged since it
            // was verified (its stamp moved) is caught here, and nothing placed, rather
            // than handed over.
            let from = f.paths.data.clone();
            let to = out.clone();
            let marked = blobs.intact_stamp(&hash).await;
            if marked.is_none() {
                blobs.refuse_unusable(hash).await?;
            }
            let data_dir = blobs.data_dir();
            let filled = output_io(&out, move || {
                output::copy_out(&from, &to, &hash, marked, &data_dir)
            })
            .await?;
            match filled.verdict {
                Verdict::Good => {}
                Verdict::Corrupt => return Err(blobs.corrupt(hash).await),
                Verdict::Changed => {
                    blobs.mark_intact_or_not(hash, None);
                    return Err(BlobError::Changed(hex));
                }
            }
            // Intact still if nothing but our own link and rename touched the stored copy
            // from the moment it was verified (hashed now, or marked before and exactly
            // so when opened) until the output was placed.
            blobs.mark_intact_or_not(hash, filled.placed);
            Some(out)
        }
        None => None,
    };
    info!(blob = %hex, size = f.meta.size, received = f.received, trace = %crate::trace::show(trace), "blob fetched");
    let _ = progress
        .send(Progress::Done {
            blob: BlobInfo::from(&f.meta),
            path,
            received: f.received,
            retried: f.retried,
            bad_providers: f.bad.clone(),
            trace,
        })
        .await;
    Ok(())
}

/// Runs blocking IO on the output file `to`; its failures are the output's.
async fn output_io<T: Send + 'static>(
    to: &Path,
    io: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(io)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .map_err(|source| BlobError::Output {
            path: to.to_path_buf(),
            source,
        })
}

impl Fetch<'_> {
    fn incomplete(&self, why: impl Into<String>) -> BlobError {
        BlobError::Incomplete {
            hash: files::hex(&self.hash),
            why: why.into(),
            verified: verified_bytes(&self.meta.verified, self.meta.size),
            size: self.meta.size,
        }
    }

    /// Providers from the DHT (not this node, not known liars), connected.
    async fn find_providers(&mut self) -> Result<(), BlobError> {
        let me = self.overlay.peer_id();
        let known_bad = self.blobs.bad_providers();
        let found = crate::dht_keys::providers(&self.overlay, crate::dht_keys::blob(&self.hash))
            .await
            .unwrap_or_default();
        let tried: Vec<PeerId> = self.providers.iter().map(|p| p.peer).collect();
        let mut found: Vec<PeerId> = found
            .into_iter()
            .filter(|p| *p != me && !known_bad.contains(p) && !tried.contains(p))
            .collect();
        // Providers whose requests keep failing (an open circuit breaker) come last.
        found.sort_by_key(|p| self.overlay.failing(p));
        let fresh: Vec<PeerId> = found.into_iter().take(MAX_PROVIDERS).collect();
        let dials = fresh.iter().map(|p| {
            let overlay = self.overlay.clone();
            let p = *p;
            async move { overlay.dial_peer(p).await.ok().map(|_| p) }
        });
        let reached: Vec<PeerId> = futures::future::join_all(dials)
            .await
            .into_iter()
            .flatten()
            .collect();
        self.providers
            .extend(reached.into_iter().map(|peer| Provider {
                peer,
                in_flight: 0,
                failures: 0,
                busy: 0,
                dropped: false,
            }));
        if self.providers.iter().all(|p| p.dropped) {
            return Err(BlobError::NoProviders(files::hex(&self.hash)));
        }
        Ok(())
    }

    async fn ask(
        overlay: &Overlay,
        peer: PeerId,
        req: BlobRequest,
    ) -> Result<BlobResponse, String> {
        // A size and a single chunk are small: a provider that cannot send them quickly
        // is not waited for as long as for a piece.
        let deadline = match &req {
            BlobRequest::Ranges { ranges, .. }
                if ranges
                    .iter()
                    .map(|(s, e)| e.saturating_sub(*s))
                    .sum::<u64>()
                    > PROBE_CHUNKS =>
            {
                PIECE_TIMEOUT
            }
            _ => PROBE_TIMEOUT,
        };
        let call = overlay.request(peer, Protocol::Blob, req.encode());
        let bytes = tokio::time::timeout(deadline, call)
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        BlobResponse::decode(bytes).map_err(|e| e.to_string())
    }

    fn open(&self) -> Result<Sinks, BlobError> {
        let (data, ob) = files::open_partial(&self.paths, self.meta.size)?;
        let out = match &self.output {
            Some(o) => Some(o.file()?),
            None => None,
        };
        Ok(Sinks { data, ob, out })
    }

    fn liar(&mut self, i: usize, why: &str) {
        let peer = self.providers[i].peer;
        if self.bad.contains(&peer) {
            return;
        }
        warn!(%peer, blob = %files::hex(&self.hash), "provider sent bytes that do not verify ({why}); dropping it");
        self.providers[i].dropped = true;
        self.bad.push(peer);
        self.blobs.mark_bad(peer);
    }

    fn mark(&mut self, piece: (u64, u64)) {
        let mut all = self.meta.verified.clone();
        all.push(piece);
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in all {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.meta.verified = merged;
    }

    fn missing(&self) -> VecDeque<(u64, u64)> {
        let chunks = self.meta.size.div_ceil(CHUNK);
        (0..chunks.div_ceil(PIECE))
            .map(|i| (i * PIECE, ((i + 1) * PIECE).min(chunks)))
            .filter(|(s, e)| !self.meta.verified.iter().any(|(vs, ve)| vs <= s && e <= ve))
            .collect()
    }

    async fn fetch_pieces(&mut self, progress: &mpsc::Sender<Progress>) -> Result<(), BlobError> {
        let sinks = self.open()?;
        let mut queue = self.missing();
        let mut flight: FuturesUnordered<Pin<Box<dyn Future<Output = Arrived> + Send>>> =
            FuturesUnordered::new();
        // A record of the verified ranges in the making: the files' sync runs beside the
        // transfer, and the ranges verified when it began are recorded once it ends.
        let mut syncing: Option<(JoinHandle<std::io::Result<()>>, BlobMeta)> = None;
        let mut unsaved = 0;
        let mut refreshed = false;
        loop {
            // Hand out pieces to providers with room.
            while let Some(piece) = queue.front().copied() {
                // The least busy provider, those whose breaker is open last: they fail at
                // once, so they get a piece only when nobody else has room.
                let Some(i) = (0..self.providers.len())
                    .filter(|i| {
                        !self.providers[*i].dropped && self.providers[*i].in_flight < PER_PROVIDER
                    })
                    .min_by_key(|i| {
                        let p = &self.providers[*i];
                        (self.overlay.failing(&p.peer), p.in_flight)
                    })
                else {
                    break;
                };
                queue.pop_front();
                self.providers[i].in_flight += 1;
                let (overlay, peer, hash, size, trace) = (
                    self.overlay.clone(),
                    self.providers[i].peer,
                    self.hash,
                    self.meta.size,
                    self.trace,
                );
                let sinks = match sinks.dup() {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors: keep what verified so far.
                        let _ = self.save_verified(&sinks).await;
                        return Err(e.into());
                    }
                };
                flight.push(Box::pin(async move {
                    let req = BlobRequest::Ranges {
                        hash,
                        ranges: vec![piece],
                        trace: Some(trace),
                    };
                    let r = match Self::ask(&overlay, peer, req).await {
                        Ok(BlobResponse::Encoded(enc)) => {
                            let len = enc.len() as u64;
                            Ok((len, sinks.verify(hash, size, enc, piece).await))
                        }
                        Ok(BlobResponse::Refused(why)) if why == BUSY => {
                            tokio::time::sleep(BUSY_PAUSE).await;
                            Err(Miss::Busy)
                        }
                        Ok(BlobResponse::NotFound) => Err(Miss::NotFound),
                        Ok(other) => Err(Miss::Failed(format!(
                            "unexpected answer, {}",
                            other.describe()
                        ))),
                        Err(e) => Err(Miss::Failed(e)),
                    };
                    (i, piece, r)
                }));
            }
            let arrived = tokio::select! {
                synced = async { (&mut syncing.as_mut().expect("checked").0).await },
                    if syncing.is_some() =>
                {
                    let (_, meta) = syncing.take().expect("checked");
                    joined(synced)?;
                    self.blobs.save(meta).await?;
                    continue;
                }
                arrived = flight.next() => arrived,
            };
            let Some((i, piece, r)) = arrived else {
                if queue.is_empty() {
                    break;
                }
                // Nobody left to ask: look for providers once more, then give up.
                if refreshed {
                    self.save_verified(&sinks).await?;
                    return Err(self.incomplete("every provider failed or was dropped"));
                }
                refreshed = true;
                if self.find_providers().await.is_err() {
                    self.save_verified(&sinks).await?;
                    return Err(self.incomplete("no provider left"));
                }
                continue;
            };
            self.providers[i].in_flight -= 1;
            let peer = self.providers[i].peer;
            match r {
                Ok((len, verified)) => {
                    self.received += len;
                    match verified {
                        // Bytes that verify are the blob's, whoever sent them: even a
                        // provider dropped while they came.
                        Ok(()) => {
                            self.providers[i].busy = 0;
                            self.mark(piece);
                            unsaved += 1;
                            if unsaved >= SAVE_EVERY && syncing.is_none() {
                                syncing = Some((start_sync(&sinks)?, self.meta.clone()));
                                unsaved = 0;
                            }
                            let active = self.providers.iter().filter(|p| !p.dropped).count();
                            let _ = progress.try_send(Progress::Progress {
                                have: verified_bytes(&self.meta.verified, self.meta.size),
                                size: self.meta.size,
                                providers: active,
                            });
                        }
                        Err(DecodeFailure::Local(e)) => {
                            // What verified before is kept (recorded at the last save).
                            let _ = self.save_verified(&sinks).await;
                            return Err(self.incomplete(crate::store::said(&e)));
                        }
                        Err(DecodeFailure::Bad(why)) => {
                            self.liar(i, &why);
                            self.retried += 1;
                            queue.push_front(piece);
                        }
                    }
                }
                // Dropped (a liar, or failing) while this piece was out.
                Err(_) if self.providers[i].dropped => {
                    self.retried += 1;
                    queue.push_front(piece);
                }
                Err(Miss::Busy) if self.providers[i].busy < MAX_BUSY => {
                    self.providers[i].busy += 1;
                    queue.push_front(piece);
                }
                Err(miss) => {
                    debug!(%peer, "piece request failed: {miss}");
                    let p = &mut self.providers[i];
                    p.failures += 1;
                    // A provider that does not hold the blob will not hold it on retry.
                    if p.failures >= MAX_FAILURES || matches!(miss, Miss::NotFound) {
                        p.dropped = true;
                    }
                    self.retried += 1;
                    queue.push_front(piece);
                }
            }
        }
        // Completing syncs everything; the record that sync was for is outdated.
        if let Some((handle, _)) = syncing {
            joined(handle.await)?;
        }
        self.complete(Some(sinks)).await
    }

    /// Makes the verified data durable, then records which ranges it covers.
    async fn save_verified(&self, sinks: &Sinks) -> Result<(), BlobError> {
        let meta = self.meta.clone();
        joined(start_sync(sinks)?.await)?;
        self.blobs.save(meta).await
    }

    async fn complete(&mut self, sinks: Option<Sinks>) -> Result<(), BlobError> {
        let paths = self.paths.clone();
        let size = self.meta.size;
        let verified = tokio::task::spawn_blocking(move || {
            let (data, ob) = match sinks {
                Some(s) => (s.data, s.ob),
                None => files::open_partial(&paths, size)?,
            };
            files::finish(&paths, data, ob)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.meta.complete = true;
        self.meta.verified.clear();
        self.blobs.mark_intact_since(self.hash, verified).await;
        self.blobs.save(self.meta.clone()).await
    }
}
