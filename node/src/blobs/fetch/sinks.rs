//! Where a fetch's verified bytes go, and making them durable.

use std::fs::File;

use tokio::task::JoinHandle;

use crate::blobs::files::{self, DecodeFailure};
use crate::blobs::output::Targets;
use crate::blobs::wire::Framed;
use crate::blobs::BlobError;

/// Starts making a fetch's files durable, on a blocking thread.
pub(super) fn start_sync(sinks: &Sinks) -> std::io::Result<JoinHandle<std::io::Result<()>>> {
    let (data, ob) = (sinks.data.try_clone()?, sinks.ob.try_clone()?);
    Ok(tokio::task::spawn_blocking(move || {
        data.sync_data()?;
        ob.sync_data()
    }))
}

/// The result of blocking IO that ran on another thread.
pub(super) fn joined<T>(
    r: Result<std::io::Result<T>, tokio::task::JoinError>,
) -> Result<T, BlobError> {
    Ok(r.map_err(|e| std::io::Error::other(e.to_string()))??)
}

/// Handles on the files a piece's verified bytes go to: the store's partial data file and
/// tree, and the output of a streamed `-o` fetch.
pub(super) struct Sinks {
    pub(super) data: File,
    pub(super) ob: File,
    pub(super) out: Option<File>,
}

impl Sinks {
    pub(super) fn dup(&self) -> std::io::Result<Sinks> {
        Ok(Sinks {
            data: self.data.try_clone()?,
            ob: self.ob.try_clone()?,
            out: self.out.as_ref().map(File::try_clone).transpose()?,
        })
    }

    /// Verifies `enc` as the encoding of chunks `piece` and writes what verifies, on a
    /// blocking thread (pieces in flight verify in parallel, off the fetch's loop).
    pub(super) async fn verify(
        self,
        hash: [u8; 32],
        size: u64,
        enc: Framed,
        piece: (u64, u64),
    ) -> Result<(), DecodeFailure> {
        let Sinks { data, ob, out } = self;
        let targets = Targets { store: data, out };
        tokio::task::spawn_blocking(move || {
            let decoded = files::decode(enc.payload(), &hash, size, &[piece], targets, ob);
            enc.recycle();
            decoded
        })
        .await
        // A panic while decoding is the response's doing, not the disk's.
        .map_err(|e| DecodeFailure::Bad(format!("decoding failed: {e}")))?
    }
}
