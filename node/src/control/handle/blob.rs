//! The `blob.*` control methods.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Blobs, Progress};
use crate::control::api::{method, ApiError, ErrorCode};
use crate::control::server::{Answer, STREAM_QUEUE};
use crate::control::{params, reply as value, stream, unknown_method};

/// `blob.add` parameters: an absolute path the daemon can read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddParams {
    pub path: String,
}

/// Parameters naming a blob by hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HashParams {
    pub hash: String,
}

/// `blob.get` parameters: copy the blob to `out` (absolute) once complete.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetParams {
    pub hash: String,
    #[serde(default)]
    pub out: Option<String>,
}

/// `blob.providers` result entries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub peer_id: String,
}

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

/// Answers one `blob.*` method.
pub async fn call(blobs: &Blobs, m: &str, p: serde_cbor::Value) -> Result<Answer, ApiError> {
    match m {
        method::BLOB_ADD => {
            let a: AddParams = params(p)?;
            value(&blobs.add(absolute(&a.path)?).await?)
        }
        method::BLOB_LS => value(&blobs.list()),
        method::BLOB_RM => {
            let a: HashParams = params(p)?;
            value(&blobs.remove(&a.hash).await?)
        }
        method::BLOB_PIN | method::BLOB_UNPIN => {
            let a: HashParams = params(p)?;
            let pinned = m == method::BLOB_PIN;
            value(&blobs.pin(&a.hash, pinned).await?)
        }
        method::BLOB_PROVIDERS => {
            let a: HashParams = params(p)?;
            let found = blobs.providers(&a.hash).await?;
            let list: Vec<ProviderInfo> = found
                .into_iter()
                .map(|p| ProviderInfo {
                    peer_id: p.to_string(),
                })
                .collect();
            value(&list)
        }
        method::BLOB_GET => {
            let a: GetParams = params(p)?;
            let out = a.out.as_deref().map(absolute).transpose()?;
            super::parse_hash(&a.hash)?;
            if let Some(out) = &out {
                blobs.check_output(out)?;
            }
            let (ptx, prx) = mpsc::channel::<Progress>(STREAM_QUEUE);
            let blobs = blobs.clone();
            // The fetch goes on even if the client leaves: what it verified is kept.
            tokio::spawn(async move {
                let fail = ptx.clone();
                if let Err(e) = blobs.get(&a.hash, out, ptx).await {
                    let _ = fail
                        .send(Progress::Failed {
                            message: e.to_string(),
                        })
                        .await;
                }
            });
            // The stream ends when the fetch task, the last sender, is done.
            Ok(stream(prx))
        }
        other => Err(unknown_method(other)),
    }
}
