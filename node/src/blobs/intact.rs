//! Which complete blobs are known intact: hashed (or verified as fetched) since start,
//! with their data file's [`files::Stamp`] then, so that they are served and copied out
//! without hashing them again while the stamp holds; and what happens to a copy that is
//! corrupt, gone, or cannot be read.

use tracing::{error, info, warn};

use super::{files, BlobError, Blobs};

/// How long a stored copy that could not be read is refused without trying again.
const UNREADABLE_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// File checks (`stat`) waiting on the disk at once; past them a check fails at once.
pub(super) const MAX_STATS: usize = 16;

/// Blobs hashed at once to check them before they are served; others wait for a turn
/// up to [`CHECK_WAIT`], then are answered "busy".
pub(super) const MAX_CHECKING: usize = 2;
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A stored copy's failed read: its stamp then, when, and the error.
pub(super) struct Unreadable {
    stamp: files::Stamp,
    at: std::time::Instant,
    error: String,
}

impl Blobs {
    /// Runs a file check on a blocking thread: a disk that hangs (a network file system,
    /// a drive stuck in its firmware) stalls that thread, not the node's runtime, and at
    /// most [`MAX_STATS`] threads.
    async fn off_runtime<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let Ok(_permit) = self.0.stats.try_acquire() else {
            return Err(std::io::Error::other(
                "the disk is slow to answer file checks; try again",
            ));
        };
        tokio::task::spawn_blocking(check)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    }

    /// A data file's stamp, off the runtime.
    async fn stamp_of(&self, path: std::path::PathBuf) -> std::io::Result<files::Stamp> {
        self.off_runtime(move || files::stamp(&path)).await
    }

    /// Marks a complete blob intact if its data file was not written since `verified`,
    /// its stamp when its bytes were hashed or verified: our own rename since then moves
    /// only its ctime ([`files::Stamp::unwritten_since`]).
    pub(super) async fn mark_intact_since(&self, hash: [u8; 32], verified: files::Stamp) {
        let now = self.stamp_of(self.paths(&hash).data).await.ok();
        self.mark_intact_or_not(hash, now.filter(|s| s.unwritten_since(&verified)));
    }

    /// Marks a complete blob intact as its data file stands at `stamp`; with none, the
    /// mark goes, and the blob is hashed again before it is served or copied out.
    pub(super) fn mark_intact_or_not(&self, hash: [u8; 32], stamp: Option<files::Stamp>) {
        let mut intact = crate::lock(&self.0.intact);
        match stamp {
            Some(s) => intact.insert(hash, s),
            None => intact.remove(&hash),
        };
    }

    /// Checks, once per start, that a complete blob's bytes still hash to it before they
    /// are served or copied out. A corrupt copy is removed, a missing one forgotten (either
    /// can be fetched again); one that cannot be read (a failing disk, permissions
    /// changed) is kept and refused ([`Blobs::refuse_unusable`]).
    /// `Ok(false)`: another caller is checking it right now, [`MAX_CHECKING`] blobs were
    /// being checked for all of [`CHECK_WAIT`], or the copy was written to while it was
    /// hashed (answer "busy": it is hashed again at the next request).
    pub(super) async fn check_intact(&self, hash: [u8; 32]) -> Result<bool, BlobError> {
        if self.is_intact(&hash).await {
            return Ok(true);
        }
        let before = self.refuse_unusable(hash).await?;
        if !crate::lock(&self.0.checking).insert(hash) {
            return Ok(false);
        }
        // A few at once: after a start no blob is marked, and a peer asking for every
        // blob here must not set the disk hashing them all in parallel.
        let turn = tokio::time::timeout(CHECK_WAIT, self.0.hashing.acquire()).await;
        let Ok(Ok(_turn)) = turn else {
            crate::lock(&self.0.checking).remove(&hash);
            return Ok(false);
        };
        let data = self.paths(&hash).data;
        let r = tokio::task::spawn_blocking(move || files::hash_stamped(&data)).await;
        crate::lock(&self.0.checking).remove(&hash);
        let hashed = r.map_err(|e| std::io::Error::other(e.to_string()))?;
        match hashed {
            Ok((h, Some(stamp))) if h == hash => {
                self.mark_intact_or_not(hash, Some(stamp));
                Ok(true)
            }
            Ok((_, None)) => {
                info!(blob = %files::hex(&hash), "the blob's data file changed while it was hashed; it is hashed again at the next request");
                Ok(false)
            }
            Ok(_) => Err(self.corrupt(hash).await),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.missing(hash).await),
            Err(e) => {
                warn!(blob = %files::hex(&hash), "cannot read the blob's data file to check it; refused for {}s or until the file changes: {e}", UNREADABLE_FOR.as_secs());
                if let Some(stamp) = before {
                    let failed = Unreadable {
                        stamp,
                        at: std::time::Instant::now(),
                        error: e.to_string(),
                    };
                    crate::lock(&self.0.unreadable).insert(hash, failed);
                }
                Err(BlobError::Io(e))
            }
        }
    }

    /// Before a complete blob's data file is read: forgets the blob if the file is gone,
    /// and refuses it if a read failed less than [`UNREADABLE_FOR`] ago and the file has
    /// not changed since. Its stamp now, if it has one.
    pub(super) async fn refuse_unusable(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<files::Stamp>, BlobError> {
        let data = self.paths(&hash).data;
        let now = match self.stamp_of(data.clone()).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.missing(hash).await)
            }
            now => now.ok(),
        };
        let mut unreadable = crate::lock(&self.0.unreadable);
        if let Some(failed) = unreadable.get(&hash) {
            if now == Some(failed.stamp) && failed.at.elapsed() < UNREADABLE_FOR {
                return Err(BlobError::Io(std::io::Error::other(format!(
                    "{} could not be read {} s ago ({}); tried again {} s after that, or once the file changes",
                    data.display(),
                    failed.at.elapsed().as_secs(),
                    failed.error,
                    UNREADABLE_FOR.as_secs()
                ))));
            }
            unreadable.remove(&hash);
        }
        Ok(now)
    }

    /// True if a complete blob's bytes were hashed (or fetched and verified) since start,
    /// and its data file was not written since (one `stat`).
    pub(super) async fn is_intact(&self, hash: &[u8; 32]) -> bool {
        self.intact_stamp(hash).await.is_some()
    }

    /// The stamp a complete blob's data file was marked intact with, if the file still
    /// has it. A file changed since loses its mark, and is hashed again before it is
    /// served or copied out.
    pub(super) async fn intact_stamp(&self, hash: &[u8; 32]) -> Option<files::Stamp> {
        let marked = crate::lock(&self.0.intact).get(hash).copied()?;
        let now = self.stamp_of(self.paths(hash).data).await;
        match now {
            Ok(s) if s == marked => return Some(marked),
            Ok(_) => {
                info!(blob = %files::hex(hash), "the blob's data file changed since it was hashed; it is hashed again before it is served")
            }
            Err(e) => {
                info!(blob = %files::hex(hash), "cannot check the blob's data file ({e}); it is hashed again before it is served")
            }
        }
        let mut intact = crate::lock(&self.0.intact);
        // Only the mark that was checked: another may have been set meanwhile.
        if intact.get(hash) == Some(&marked) {
            intact.remove(hash);
        }
        None
    }

    /// Forgets and removes a blob whose stored bytes do not hash to it; the error to
    /// report.
    pub(super) async fn corrupt(&self, hash: [u8; 32]) -> BlobError {
        let hex = files::hex(&hash);
        error!(blob = %hex, "the stored copy of a blob is corrupt; removing it");
        self.drop_copy(hash).await;
        BlobError::Corrupt(hex)
    }

    /// Forgets a complete blob whose data file is gone, if it was removed from a blob
    /// directory that is still there ([`files::data_removed`]); the error to report.
    pub(super) async fn missing(&self, hash: [u8; 32]) -> BlobError {
        let hex = files::hex(&hash);
        let paths = self.paths(&hash);
        let removed = self
            .off_runtime(move || Ok(files::data_removed(&paths)))
            .await;
        if !removed.unwrap_or(false) {
            let dir = self.0.dir.display();
            warn!(blob = %hex, "the blob's files are gone from {dir}; its record is kept");
            return BlobError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the files of blob {hex} are gone from {dir} (is its disk mounted?); its record is kept: `lattice blob rm {hex}` forgets it"),
            ));
        }
        error!(blob = %hex, "the stored copy of a blob is gone from the data directory; forgetting it");
        self.drop_copy(hash).await;
        BlobError::Missing(hex)
    }

    /// Forgets a blob and removes what is left of its files.
    pub(super) async fn drop_copy(&self, hash: [u8; 32]) {
        let hex = files::hex(&hash);
        if let Err(e) = self.0.store.del_blob(hash).await {
            warn!(blob = %hex, "cannot forget the blob: {e}");
        }
        self.forget(&hash);
        if let Err(e) = self.paths(&hash).remove() {
            warn!(blob = %hex, "cannot remove the blob's files: {e}");
        }
    }
}
