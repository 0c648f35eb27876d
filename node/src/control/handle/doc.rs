//! The `doc.*` control methods: parameters in, [`Docs`] calls, results out.

use lattice_crdt::json::Json;
use lattice_crdt::sync::AclChange;
use lattice_crdt::{Op, OpKind};

use super::{actor_of, Docs, DocsError, Edit};
use crate::control::api::{self, method, ApiError};
use crate::control::server::Answer;
use crate::control::{params, reply as value, stream_lossy, unknown_method};

fn actors(peers: &[String]) -> Result<Vec<lattice_crdt::ActorId>, ApiError> {
    crate::control::check_peer_list(peers)?;
    peers
        .iter()
        .map(|p| actor_of(p))
        .collect::<Result<_, _>>()
        .map_err(ApiError::from)
}

async fn write(docs: &Docs, doc: String, key: String, kind: OpKind) -> Result<Answer, ApiError> {
    if key.is_empty() {
        return Err(DocsError::BadRequest("empty key".into()).into());
    }
    let op = Op::new(key, kind);
    value(&docs.write(doc, Edit::Op(op)).await?)
}

/// Answers one `doc.*` method.
pub async fn call(docs: &Docs, m: &str, p: serde_cbor::Value) -> Result<Answer, ApiError> {
    match m {
        method::DOC_CREATE => {
            let a: api::CreateParams = params(p)?;
            if a.open && !a.writers.is_empty() {
                return Err(DocsError::BadRequest(
                    "an open document takes no writers (anyone may write)".into(),
                )
                .into());
            }
            let writers = actors(&a.writers)?;
            value(&docs.create(a.name, a.open, writers).await?)
        }
        method::DOC_JOIN => {
            let a: api::DocParams = params(p)?;
            value(&docs.join(&a.doc).await?)
        }
        method::DOC_LS => value(&docs.list().await?),
        method::DOC_INFO => {
            let a: api::DocParams = params(p)?;
            value(&docs.info(a.doc).await?)
        }
        method::DOC_GET => {
            let a: api::GetParams = params(p)?;
            value(&docs.get(a.doc, a.key).await?)
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
                return Err(DocsError::BadRequest("no members given".into()).into());
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
                docs.write(a.doc.clone(), Edit::Writers(changes)).await?;
            }
            value(&docs.writers(a.doc).await?)
        }
        method::DOC_WATCH => {
            let a: api::DocParams = params(p)?;
            Ok(stream_lossy(docs.watch(a.doc).await?, "changes"))
        }
        other => Err(unknown_method(other)),
    }
}
