//! The first answers of a fresh fetch: the blob's size, proven by its last chunk.

use std::time::Duration;

use tracing::debug;

use super::{Fetch, Miss, BUSY, BUSY_PAUSE, MAX_FAILURES, PROBE_CHUNKS};
use crate::blobs::files::{DecodeFailure, CHUNK};
use crate::blobs::wire::{BlobRequest, BlobResponse, MAX_BLOB_BYTES};
use crate::blobs::BlobError;

/// A failed size request is sent again after this pause.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// "Busy" answers waited out for the size and the last chunk (2 s of them): providers are
/// asked for those one after another, so one that keeps saying "busy" must not hold the
/// fetch up for long.
const PROBE_BUSY: u32 = 8;

impl Fetch<'_> {
    /// Learns the size from a provider and proves it by verifying the last chunk against
    /// the hash (the tree's shape depends on the size); a provider that lies is dropped.
    pub(super) async fn prove_size(&mut self) -> Result<(), BlobError> {
        // Why each provider that was asked did not prove it, for the error.
        let mut misses = Vec::new();
        for i in 0..self.providers.len() {
            let peer = self.providers[i].peer;
            let req = BlobRequest::Size {
                hash: self.hash,
                trace: Some(self.trace),
            };
            let size = match self.ask_patiently(i, req).await {
                Ok(BlobResponse::Size(s)) => s,
                Ok(other) => {
                    debug!(%peer, "provider gave no size: {}", other.describe());
                    misses.push(format!("{peer}: unexpected answer, {}", other.describe()));
                    self.providers[i].dropped = true;
                    continue;
                }
                Err(miss) => {
                    debug!(%peer, "provider gave no size: {miss}");
                    misses.push(format!("{peer}: {miss}"));
                    self.providers[i].dropped = true;
                    continue;
                }
            };
            if size == 0 {
                if blake3::hash(&[]).as_bytes() == &self.hash {
                    self.meta.size = 0;
                    return self.complete(None).await;
                }
                self.liar(i, "claimed an empty blob");
                continue;
            }
            if size > MAX_BLOB_BYTES {
                self.liar(i, "claimed a blob larger than 1 TiB");
                continue;
            }
            self.meta.size = size;
            // Only the last block (at most [`PROBE_CHUNKS`] chunks): asking one provider
            // for a whole piece here kept every other provider idle while it came.
            let chunks = size.div_ceil(CHUNK);
            let last = ((chunks - 1) / PROBE_CHUNKS * PROBE_CHUNKS, chunks);
            let sinks = self.open()?;
            let req = BlobRequest::Ranges {
                hash: self.hash,
                ranges: vec![last],
                trace: Some(self.trace),
            };
            match self.ask_patiently(i, req).await {
                Ok(BlobResponse::Encoded(enc)) => {
                    self.received += enc.len() as u64;
                    match sinks.dup()?.verify(self.hash, size, enc, last).await {
                        Ok(()) => {
                            self.mark(last);
                            // Durable before it is recorded as verified.
                            self.save_verified(&sinks).await?;
                            return Ok(());
                        }
                        Err(DecodeFailure::Local(e)) => {
                            self.meta.size = 0;
                            let _ = self.paths.remove();
                            return Err(BlobError::Io(e));
                        }
                        Err(DecodeFailure::Bad(_)) => {
                            self.liar(i, "its size or last chunk does not verify")
                        }
                    }
                }
                other => {
                    let why = match other {
                        Err(miss) => miss.to_string(),
                        Ok(answer) => format!("unexpected answer, {}", answer.describe()),
                    };
                    debug!(%peer, "provider did not send the last chunk: {why}");
                    misses.push(format!("{peer}: the last chunk did not come: {why}"));
                    self.providers[i].dropped = true;
                }
            }
            self.meta.size = 0;
            self.paths.remove()?;
        }
        let why = if misses.is_empty() {
            String::new()
        } else {
            format!(" ({})", misses.join("; "))
        };
        Err(self.incomplete(format!("no provider proved the blob's size{why}")))
    }

    /// Asks provider `i`, patiently: a request that fails is sent again (a connection
    /// may be replaced under it, as when a hole punch succeeds) and "busy" is waited out.
    /// A provider that does not hold the blob is not asked twice.
    async fn ask_patiently(&mut self, i: usize, req: BlobRequest) -> Result<BlobResponse, Miss> {
        let peer = self.providers[i].peer;
        loop {
            let miss = match Self::ask(&self.overlay, peer, req.clone()).await {
                Ok(BlobResponse::NotFound) => return Err(Miss::NotFound),
                Ok(BlobResponse::Refused(why)) if why == BUSY => Miss::Busy,
                Ok(answer) => return Ok(answer),
                Err(e) => Miss::Failed(e),
            };
            let p = &mut self.providers[i];
            match miss {
                Miss::Busy if p.busy < PROBE_BUSY => {
                    p.busy += 1;
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                Miss::Failed(_) if p.failures + 1 < MAX_FAILURES => {
                    p.failures += 1;
                    self.retried += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                miss => return Err(miss),
            }
        }
    }
}
