//! The one place domain errors become control-socket errors: each gets its stable code
//! (docs/control-protocol.md lists them) here, and handlers just use `?`.

use super::api::{ApiError, ErrorCode};
use crate::blobs::BlobError;
use crate::docs::DocsError;
use crate::services::ServiceError;
use crate::topics::TopicError;

/// The code of an overlay failure.
fn network_code(e: &lattice_overlay::Error) -> ErrorCode {
    use lattice_overlay::Error as E;
    match e {
        E::Shutdown => ErrorCode::Unavailable,
        E::Timeout(_) => ErrorCode::Timeout,
        E::Busy(_) => ErrorCode::Busy,
        E::BadAddr { .. } | E::Limit(_) => ErrorCode::BadRequest,
        _ => ErrorCode::NetworkError,
    }
}

impl From<lattice_overlay::Error> for ApiError {
    fn from(e: lattice_overlay::Error) -> Self {
        ApiError::new(network_code(&e), e.to_string())
    }
}

impl From<DocsError> for ApiError {
    fn from(e: DocsError) -> Self {
        let code = match &e {
            DocsError::Unknown(_) | DocsError::NoKey { .. } | DocsError::NoReplica(_) => {
                ErrorCode::NotFound
            }
            DocsError::NotAWriter(_) => ErrorCode::NotAWriter,
            DocsError::Ambiguous { .. } | DocsError::BadRequest(_) | DocsError::Refused(_) => {
                ErrorCode::BadRequest
            }
            DocsError::Busy => ErrorCode::Busy,
            DocsError::Shutdown => ErrorCode::Unavailable,
            DocsError::Store(_) => ErrorCode::Storage,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        let code = match &e {
            BlobError::BadHash { .. } | BlobError::Read { .. } | BlobError::Output { .. } => {
                ErrorCode::BadRequest
            }
            BlobError::Unknown(_) | BlobError::NoProviders(_) => ErrorCode::NotFound,
            BlobError::Busy(_) | BlobError::Changed(_) => ErrorCode::Busy,
            BlobError::Incomplete { .. } => ErrorCode::NetworkError,
            BlobError::Io(_)
            | BlobError::Store(_)
            | BlobError::Corrupt(_)
            | BlobError::Missing(_) => ErrorCode::Storage,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let code = match &e {
            ServiceError::NotAdvertised(_) => ErrorCode::NotFound,
            ServiceError::TooMany => ErrorCode::Busy,
            ServiceError::Network(e) => network_code(e),
            ServiceError::Store(_) => ErrorCode::Storage,
            _ => ErrorCode::BadRequest,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<TopicError> for ApiError {
    fn from(e: TopicError) -> Self {
        let code = match &e {
            TopicError::Busy => ErrorCode::Busy,
            TopicError::Network(e) => network_code(e),
            _ => ErrorCode::BadRequest,
        };
        ApiError::new(code, e.to_string())
    }
}
