//! The status page's data: what `status`, `peers`, `doc ls`, `blob ls` and `service ls`
//! answer on the control socket, asked through the same handlers, plus recent events.

use serde::Serialize;

use crate::activity::{Activity, Entry};
use crate::control::api::{self, method, ApiError, Call, Command, ErrorCode};
use crate::control::handle::Handlers;
use crate::control::server::{Answer, Handler};

/// Rows of a list shown; the page says how many there were in all.
const MAX_ROWS: usize = 200;

#[derive(Serialize)]
struct State {
    at_ms: u64,
    node: api::Status,
    /// Connected peers first, then peers whose breaker is not closed; at most
    /// [`MAX_ROWS`] of `peers_total` known.
    peers: Vec<api::Peer>,
    peers_total: usize,
    docs: Vec<api::DocInfo>,
    docs_total: usize,
    blobs: Vec<api::BlobInfo>,
    blobs_total: usize,
    services: api::Advertised,
    events: Vec<Entry>,
}

/// Asks the handlers what control method `M` answers to `params`.
async fn ask<M: Call>(h: &Handlers, params: &M::Params) -> Result<M::Result, ApiError> {
    let internal = |e: serde_cbor::Error| ApiError::new(ErrorCode::Internal, e.to_string());
    let value = serde_cbor::value::to_value(params).map_err(internal)?;
    let command = Command::parse(M::METHOD.name, value)?;
    match h.call(command).await? {
        Answer::Value(v) => serde_cbor::value::from_value(v).map_err(internal),
        Answer::Stream(_) => Err(ApiError::new(ErrorCode::Internal, "a stream")),
    }
}

/// The page's state as JSON (one line: it goes in one server-sent event).
pub(super) async fn render(h: &Handlers, activity: &Activity) -> Result<String, ApiError> {
    let none = &api::NoParams;
    let mut node = ask::<method::Status>(h, none).await?;
    // The page's own URL is in the browser already.
    node.status_page = None;
    let mut peers = ask::<method::Peers>(h, none).await?;
    let peers_total = peers.len();
    peers.retain(|p| p.connected || p.breaker != "closed");
    peers.sort_by(|a, b| {
        b.connected
            .cmp(&a.connected)
            .then(a.peer_id.cmp(&b.peer_id))
    });
    peers.truncate(MAX_ROWS);
    let mut docs = ask::<method::DocLs>(h, none).await?;
    let docs_total = docs.len();
    docs.truncate(MAX_ROWS);
    let mut blobs = ask::<method::BlobLs>(h, none).await?;
    let blobs_total = blobs.len();
    blobs.truncate(MAX_ROWS);
    let services = ask::<method::ServiceLs>(h, none).await?;
    let state = State {
        at_ms: crate::now_ms() / 1_000 * 1_000,
        node,
        peers,
        peers_total,
        docs,
        docs_total,
        blobs,
        blobs_total,
        services,
        events: activity.recent(),
    };
    serde_json::to_string(&state).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}
