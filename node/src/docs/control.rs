//! The `doc.*` control methods: parameters in, [`Docs`] calls, results out.

use lattice_crdt::json::Json;
use lattice_crdt::sync::AclChange;
use lattice_crdt::{Op, OpKind};
use tokio::sync::mpsc;

use super::{actor_of, Docs, DocsError, Edit};
use crate::control::api::{self, method, ApiError};
use crate::control::codec;
use crate::control::server::{Reply, STREAM_QUEUE};
use crate::daemon::{docs_error, unknown_method};

fn params<T: serde::de::DeserializeOwned>(v: serde_cbor::Value) -> Result<T, ApiError> {
    codec::from_value(v).map_err(|e| docs_error(DocsError::BadRequest(e.to_string())))
}

fn value<T: serde::Serialize>(v: &T) -> Result<Reply, ApiError> {
    codec::to_value(v)
        .map(Reply::Value)
        .map_err(|e| docs_error(DocsError::BadRequest(e.to_string())))
}

fn actors(peers: &[String]) -> Result<Vec<lattice_crdt::ActorId>, ApiError> {
    peers
        .iter()
        .map(|p| actor_of(p))
        .collect::<Result<_, _>>()
        .map_err(docs_error)
}

async fn write(docs: &Docs, doc: String, key: String, kind: OpKind) -> Result<Reply, ApiError> {
    if key.is_empty() {
        return Err(docs_error(DocsError::BadRequest("empty key".into())));
    }
    let op = Op::new(key, kind);
    value(&docs.write(doc, Edit::Op(op)).await.map_err(docs_error)?)
}

/// Answers one `doc.*` method.
pub async fn call(docs: &Docs, m: &str, p: serde_cbor::Value) -> Result<Reply, ApiError> {
    let e = docs_error;
    match m {
        method::DOC_CREATE => {
            let a: api::CreateParams = params(p)?;
            if a.open && !a.writers.is_empty() {
                return Err(e(DocsError::BadRequest(
                    "an open document takes no writers (anyone may write)".into(),
                )));
            }
            let writers = actors(&a.writers)?;
            value(&docs.create(a.name, a.open, writers).await.map_err(e)?)
        }
        method::DOC_JOIN => {
            let a: api::DocParams = params(p)?;
            value(&docs.join(&a.doc).await.map_err(e)?)
        }
        method::DOC_LS => value(&docs.list().await.map_err(e)?),
        method::DOC_INFO => {
            let a: api::DocParams = params(p)?;
            value(&docs.info(a.doc).await.map_err(e)?)
        }
        method::DOC_GET => {
            let a: api::GetParams = params(p)?;
            value(&docs.get(a.doc, a.key).await.map_err(e)?)
        }
        method::DOC_SET => {
            let a: api::SetParams = params(p)?;
            write(
                docs,
                a.doc,
                a.key,
                OpKind::Set(Json::parse_or_string(&a.value)),
            )
            .await
        }
        method::DOC_DEL => {
            let a: api::KeyParams = params(p)?;
            write(docs, a.doc, a.key, OpKind::Delete).await
        }
        method::DOC_INCR => {
            let a: api::IncrParams = params(p)?;
            write(docs, a.doc, a.key, OpKind::Incr(a.by)).await
        }
        method::DOC_ADD | method::DOC_RM => {
            let a: api::MembersParams = params(p)?;
            if a.members.is_empty() {
                return Err(e(DocsError::BadRequest("no members given".into())));
            }
            let kind = if m == method::DOC_ADD {
                OpKind::Add(a.members)
            } else {
                OpKind::Remove(a.members)
            };
            write(docs, a.doc, a.key, kind).await
        }
        method::DOC_WRITERS => {
            let a: api::WritersParams = params(p)?;
            let mut changes: Vec<AclChange> =
                actors(&a.add)?.into_iter().map(AclChange::Add).collect();
            changes.extend(actors(&a.remove)?.into_iter().map(AclChange::Remove));
            if !changes.is_empty() {
                docs.write(a.doc.clone(), Edit::Writers(changes))
                    .await
                    .map_err(e)?;
            }
            value(&docs.writers(a.doc).await.map_err(e)?)
        }
        method::DOC_WATCH => {
            let a: api::DocParams = params(p)?;
            let mut changes = docs.watch(a.doc).await.map_err(e)?;
            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
            tokio::spawn(async move {
                while let Some(c) = changes.recv().await {
                    let Ok(v) = codec::to_value(&c) else { continue };
                    if tx.send(v).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Reply::Stream(rx))
        }
        other => Err(unknown_method(other)),
    }
}
