//! Where each control method is answered: [`Handlers`] routes a parsed [`Command`] by its
//! method's [`Family`] to `net.rs`, `doc.rs`, `blob.rs`, `service.rs` or `topic.rs`, which
//! call the domain services and turn their answers into wire types (`super::convert`).

mod blob;
mod doc;
mod net;
mod service;
mod topic;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lattice_overlay::Overlay;

use super::api::{ApiError, Call, Command, Family};
use super::server::{Answer, Handler};
use crate::blobs::Blobs;
use crate::docs::Docs;
use crate::metrics::Metrics;
use crate::services::Services;
use crate::topics::Topics;

/// What the control methods act on.
pub(crate) struct Handlers {
    pub overlay: Overlay,
    pub docs: Docs,
    pub blobs: Blobs,
    pub services: Services,
    pub topics: Topics,
    pub started: Instant,
    pub data_dir: PathBuf,
    pub metrics: Metrics,
    /// The status page's URL with its token, if one is served.
    pub status_page: Option<String>,
}

impl Handler for Handlers {
    async fn call(&self, command: Command) -> Result<Answer, ApiError> {
        match command.method().family {
            Family::Net => net::call(self, command).await,
            Family::Doc => doc::call(&self.docs, command).await,
            Family::Blob => blob::call(&self.blobs, command).await,
            Family::Service => service::call(&self.services, command).await,
            Family::Topic => topic::call(&self.topics, command).await,
        }
    }

    fn observe(&self, method: &'static str, elapsed: Duration, ok: bool) {
        self.metrics.control_request(method, elapsed, ok);
    }
}

/// The one-value answer of method `M`: the type checks that `result` is what the method
/// table says `M` returns.
fn answer<M: Call>(result: M::Result) -> Result<Answer, ApiError> {
    super::reply(&result)
}

/// A command routed to the wrong family: a bug in the table's routing, not the client's.
fn misrouted(command: &Command) -> ApiError {
    ApiError::new(
        super::api::ErrorCode::Internal,
        format!(
            "method {:?} was routed to the wrong handler",
            command.method().name
        ),
    )
}
