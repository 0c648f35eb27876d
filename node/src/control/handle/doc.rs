//! `doc.*`: parameters in, [`Docs`] calls, wire types out.

use lattice_crdt::json::Json;
use lattice_crdt::sync::AclChange;
use lattice_crdt::{ActorId, Op, OpKind};

use super::{answer, misrouted};
use crate::control::api::{self, method, ApiError, Command};
use crate::control::server::Answer;
use crate::control::stream_lossy;
use crate::docs::{Docs, DocsError, Edit};

/// Peer ids given by a user, as the actor ids their deltas carry.
fn actors(peers: &[String]) -> Result<Vec<ActorId>, ApiError> {
    crate::control::check_peer_list(peers)?;
    peers.iter().map(|p| actor_of(p)).collect()
}

fn actor_of(peer: &str) -> Result<ActorId, ApiError> {
    let id = crate::control::parse_peer_id(peer).map_err(DocsError::BadRequest)?;
    let actor = crate::auth::actor_of_peer(&id).ok_or_else(|| {
        DocsError::BadRequest(format!(
            "{peer} is not an Ed25519 peer id, so it cannot write"
        ))
    })?;
    Ok(actor)
}

async fn write(
    docs: &Docs,
    doc: String,
    key: String,
    kind: OpKind,
) -> Result<api::Written, ApiError> {
    if key.is_empty() {
        return Err(DocsError::BadRequest("empty key".into()).into());
    }
    let op = Op::new(key, kind);
    Ok(docs.write(doc, Edit::Op(op)).await?.into())
}

fn members(a: &api::MembersParams) -> Result<(), ApiError> {
    if a.members.is_empty() {
        return Err(DocsError::BadRequest("no members given".into()).into());
    }
    Ok(())
}

pub(super) async fn call(docs: &Docs, command: Command) -> Result<Answer, ApiError> {
    match command {
        Command::DocCreate(a) => {
            if a.open && !a.writers.is_empty() {
                return Err(DocsError::BadRequest(
                    "an open document takes no writers (anyone may write)".into(),
                )
                .into());
            }
            let writers = actors(&a.writers)?;
            let d = docs.create(a.name, a.open, writers).await?;
            answer::<method::DocCreate>(d.into())
        }
        Command::DocJoin(a) => answer::<method::DocJoin>(docs.join(&a.doc).await?.into()),
        Command::DocLs(_) => {
            let list = docs.list().await?;
            answer::<method::DocLs>(list.into_iter().map(Into::into).collect())
        }
        Command::DocInfo(a) => answer::<method::DocInfo>(docs.info(a.doc).await?.into()),
        Command::DocCut(a) => answer::<method::DocCut>(docs.cut(a.doc, a.at_ms).await?.into()),
        Command::DocGet(a) => answer::<method::DocGet>(docs.get(a.doc, a.key).await?),
        Command::DocSet(a) => {
            let kind = OpKind::Set(Json::parse_or_string(&a.value));
            answer::<method::DocSet>(write(docs, a.doc, a.key, kind).await?)
        }
        Command::DocDel(a) => {
            answer::<method::DocDel>(write(docs, a.doc, a.key, OpKind::Delete).await?)
        }
        Command::DocIncr(a) => {
            answer::<method::DocIncr>(write(docs, a.doc, a.key, OpKind::Incr(a.by)).await?)
        }
        Command::DocAdd(a) => {
            members(&a)?;
            answer::<method::DocAdd>(write(docs, a.doc, a.key, OpKind::Add(a.members)).await?)
        }
        Command::DocRm(a) => {
            members(&a)?;
            answer::<method::DocRm>(write(docs, a.doc, a.key, OpKind::Remove(a.members)).await?)
        }
        Command::DocWriters(a) => {
            let mut changes: Vec<AclChange> =
                actors(&a.add)?.into_iter().map(AclChange::Add).collect();
            changes.extend(actors(&a.remove)?.into_iter().map(AclChange::Remove));
            if !changes.is_empty() {
                docs.write(a.doc.clone(), Edit::Writers(changes)).await?;
            }
            answer::<method::DocWriters>(docs.writers(a.doc).await?.into())
        }
        Command::DocWatch(a) => Ok(stream_lossy::<_, api::WatchEvent>(
            docs.watch(a.doc).await?,
            "changes",
        )),
        other => Err(misrouted(&other)),
    }
}
