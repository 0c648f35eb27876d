//! What start-up does with the blob files a crash or a failed write left behind (see
//! docs/storage.md).

use std::collections::HashMap;

use tracing::{info, warn};

use super::{files, now_ms, BlobError, Blobs};
use crate::store::BlobMeta;

impl Blobs {
    /// A fetch renames its verified `.part` to `.data` and then records the blob complete:
    /// a crash between the two leaves a `.data` of an incomplete blob. Such a file is
    /// hashed: kept (and recorded complete) if it is the blob, removed if not, left alone
    /// if it cannot be read.
    pub(super) async fn finish_interrupted(&self) -> Result<(), BlobError> {
        let pending: Vec<BlobMeta> = self
            .index()
            .values()
            .filter(|m| !m.complete && self.paths(&m.hash).data.exists())
            .cloned()
            .collect();
        for mut m in pending {
            let paths = self.paths(&m.hash);
            let data = paths.data.clone();
            let hash = m.hash;
            let hashed = tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&data)?;
                // Sealed as `files::finish` would have, had the crash come later.
                files::seal(&file);
                files::hash_open(file)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            match hashed {
                Ok((h, stamp)) if h == hash => {
                    info!(blob = %files::hex(&hash), "a fetch finished before a crash; recorded complete");
                    m.complete = true;
                    m.verified.clear();
                    self.mark_intact_or_not(hash, Some(stamp));
                    self.save(m).await?;
                }
                Ok(_) => {
                    warn!(blob = %files::hex(&hash), "removing a blob file left by an interrupted fetch that does not verify");
                    std::fs::remove_file(&paths.data)?;
                }
                Err(e) => {
                    warn!(blob = %files::hex(&hash), "cannot read a blob file left by an interrupted fetch; left as it is: {e}")
                }
            }
        }
        Ok(())
    }

    /// Forgets the complete blobs whose `.data` file was removed by hand: neither
    /// announced nor listed, they can be fetched again. Blobs whose
    /// `.obao` is gone too are kept, with a warning: the blob directory may be missing its
    /// disk ([`files::data_removed`]).
    pub(super) async fn forget_missing(&self) -> Result<(), BlobError> {
        let (mut gone, mut lost) = (Vec::new(), 0usize);
        for m in self.index().values().filter(|m| m.complete) {
            let paths = self.paths(&m.hash);
            if files::data_removed(&paths) {
                gone.push(m.hash);
            } else if std::fs::symlink_metadata(&paths.data)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            {
                lost += 1;
            }
        }
        if lost > 0 {
            warn!(blobs = lost, dir = %self.0.dir.display(), "complete blobs whose files are all gone are kept as recorded (is the blob directory's disk mounted?); `lattice blob rm HASH` forgets one");
        }
        for hash in gone {
            warn!(blob = %files::hex(&hash), "a blob's data file is gone; forgetting the blob");
            self.0.store.del_blob(hash).await?;
            self.forget(&hash);
            // Its tree, if left.
            let _ = self.paths(&hash).remove();
        }
        Ok(())
    }

    /// Removes blob files that no record explains, and records again the whole blobs no
    /// record names once they prove to be the blob (see [`files::leftovers`]). A file
    /// that cannot be removed is logged, not fatal.
    pub(super) async fn sort_leftovers(&self) -> Result<(), BlobError> {
        let known: HashMap<[u8; 32], bool> = self
            .index()
            .values()
            .map(|m| (m.hash, m.complete))
            .collect();
        let dir = self.0.dir.clone();
        let left = tokio::task::spawn_blocking(move || files::leftovers(&dir, &known))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        for p in left.doomed {
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    info!(file = %p.display(), "removed a blob file left by an interrupted add or fetch")
                }
                Err(e) => warn!(file = %p.display(), "cannot remove a leftover blob file: {e}"),
            }
        }
        for hash in left.unrecorded {
            let dir = self.0.dir.clone();
            let adopted = tokio::task::spawn_blocking(move || files::adopt(&dir, &hash))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            match adopted {
                Ok(Some((size, stamp))) => {
                    info!(blob = %files::hex(&hash), size, "recorded again a whole blob no record named");
                    self.mark_intact_or_not(hash, Some(stamp));
                    self.save(BlobMeta {
                        hash,
                        size,
                        complete: true,
                        pinned: false,
                        local: true,
                        added_ms: now_ms(),
                        verified: Vec::new(),
                    })
                    .await?;
                }
                Ok(None) => {
                    warn!(blob = %files::hex(&hash), "removed a blob file no record named that is not the blob")
                }
                Err(e) => {
                    warn!(blob = %files::hex(&hash), "cannot check a blob file no record names: {e}")
                }
            }
        }
        Ok(())
    }
}
