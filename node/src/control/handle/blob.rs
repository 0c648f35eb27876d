//! `blob.*`.

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::{answer, misrouted};
use crate::blobs::{Blobs, Progress};
use crate::control::api::{self, method, ApiError, Command, ErrorCode};
use crate::control::server::{Answer, STREAM_QUEUE};
use crate::control::stream;

fn absolute(p: &str) -> Result<PathBuf, ApiError> {
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{p:?} is not an absolute path (the daemon has its own working directory)"),
        ));
    }
    Ok(path)
}

pub(super) async fn call(blobs: &Blobs, command: Command) -> Result<Answer, ApiError> {
    match command {
        Command::BlobAdd(a) => {
            answer::<method::BlobAdd>(blobs.add(absolute(&a.path)?).await?.into())
        }
        Command::BlobLs(_) => {
            answer::<method::BlobLs>(blobs.list().into_iter().map(Into::into).collect())
        }
        Command::BlobRm(a) => answer::<method::BlobRm>(blobs.remove(&a.hash).await?.into()),
        Command::BlobPin(a) => answer::<method::BlobPin>(blobs.pin(&a.hash, true).await?.into()),
        Command::BlobUnpin(a) => {
            answer::<method::BlobUnpin>(blobs.pin(&a.hash, false).await?.into())
        }
        Command::BlobProviders(a) => {
            let found = blobs.providers(&a.hash).await?;
            answer::<method::BlobProviders>(
                found
                    .into_iter()
                    .map(|p| api::ProviderInfo {
                        peer_id: p.to_string(),
                    })
                    .collect(),
            )
        }
        Command::BlobGet(a) => {
            let out = a.out.as_deref().map(absolute).transpose()?;
            crate::blobs::parse_hash(&a.hash)?;
            if let Some(out) = &out {
                blobs.check_output(out)?;
            }
            let (ptx, prx) = mpsc::channel::<Progress>(STREAM_QUEUE);
            let blobs = blobs.clone();
            // The fetch goes on even if the client leaves: what it verified is kept.
            let trace = crate::trace::fetch_id();
            tokio::spawn(async move {
                let fail = ptx.clone();
                if let Err(e) = blobs.get(&a.hash, out, ptx, trace).await {
                    let _ = fail
                        .send(Progress::Failed {
                            message: e.to_string(),
                            trace,
                        })
                        .await;
                }
            });
            // The stream ends when the fetch task, the last sender, is done.
            Ok(stream::<_, api::FetchEvent>(prx))
        }
        other => Err(misrouted(&other)),
    }
}
