//! [`Client`]: a connection to a daemon's control socket.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::api::{ApiError, Call, Hello, Request, Response, PROTOCOL_VERSION};
use super::codec::{self, FrameError};

/// How long a call may take before the client gives up (dials and DHT queries included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("no daemon at {0} (start one with `lattice daemon`)")]
    NoDaemon(PathBuf),
    #[error("not allowed to use {0}: it belongs to another user")]
    PermissionDenied(PathBuf),
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon at {0} did not answer in time")]
    Timeout(PathBuf),
    #[error("the daemon speaks control protocol {0}, this client speaks {PROTOCOL_VERSION}; upgrade one of them")]
    Version(u32),
    #[error("{}", .0.message)]
    Api(ApiError),
    #[error("control connection failed: {0}")]
    Frame(#[from] FrameError),
    /// The stream's reader fell behind: `dropped` events were lost and the stream ended.
    #[error("{message}")]
    Lagged { dropped: u64, message: String },
}

impl ClientError {
    /// The daemon's error, if that is what this is.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }
}

pub struct Client {
    path: PathBuf,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    next_id: u64,
    /// The daemon's hello.
    pub daemon: Hello,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path)).await;
        let stream = match connect {
            Err(_) => return Err(ClientError::Timeout(path.into())),
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                        ClientError::NoDaemon(path.into())
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        ClientError::PermissionDenied(path.into())
                    }
                    _ => ClientError::Connect {
                        path: path.into(),
                        source: e,
                    },
                })
            }
        };
        let (mut rd, mut wr) = stream.into_split();
        let ours = Hello {
            protocol_version: PROTOCOL_VERSION,
            agent: format!("lattice-cli/{}", env!("CARGO_PKG_VERSION")),
        };
        let exchange = async {
            codec::write(&mut wr, &ours).await?;
            let bytes = codec::read_frame(&mut rd).await?;
            // A daemon that refuses our version answers with an error response instead.
            if let Ok(r) = codec::decode::<Response>(&bytes) {
                if let Some(e) = r.error {
                    return Err(ClientError::Api(e));
                }
            }
            Ok::<Hello, ClientError>(codec::decode::<Hello>(&bytes)?)
        };
        let daemon = tokio::time::timeout(CONNECT_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(path.into()))??;
        if daemon.protocol_version != PROTOCOL_VERSION {
            return Err(ClientError::Version(daemon.protocol_version));
        }
        Ok(Client {
            path: path.into(),
            rd,
            wr,
            next_id: 1,
            daemon,
        })
    }

    fn request<M: Call>(&mut self, params: &M::Params) -> Result<Request, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        Ok(Request {
            id,
            method: M::METHOD.name.to_owned(),
            params: codec::to_value(params)?,
        })
    }

    /// Calls method `M` and decodes its result: `client.call::<method::DocInfo>(&params)`.
    pub async fn call<M: Call>(&mut self, params: &M::Params) -> Result<M::Result, ClientError> {
        let req = self.request::<M>(params)?;
        let id = req.id;
        let path = self.path.clone();
        let exchange = async {
            codec::write(&mut self.wr, &req).await?;
            let resp = self.response(id).await?;
            let value = resp.result.unwrap_or(serde_cbor::Value::Null);
            Ok(codec::from_value(value)?)
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(path))?
    }

    /// The next response to request `id` (others are skipped); an error answer becomes
    /// `Err`. Errors about the frame itself come with id 0.
    async fn response(&mut self, id: u64) -> Result<Response, ClientError> {
        loop {
            let mut resp: Response = codec::read(&mut self.rd).await?;
            if resp.id == id || resp.id == 0 {
                if let Some(e) = resp.error.take() {
                    return Err(ClientError::Api(e));
                }
            }
            if resp.id == id {
                return Ok(resp);
            }
        }
    }

    /// Starts streaming method `M`; read its events with [`Client::next_event`]. Dropping
    /// the client (closing the connection) stops the stream.
    pub async fn stream<M: Call>(&mut self, params: &M::Params) -> Result<Events<M>, ClientError> {
        let req = self.request::<M>(params)?;
        codec::write(&mut self.wr, &req).await?;
        Ok(Events {
            id: req.id,
            method: PhantomData,
        })
    }

    /// The next event of a stream, or `None` once it has ended. Waits as long as it takes:
    /// streams are quiet until something happens.
    pub async fn next_event<M: Call>(
        &mut self,
        events: &Events<M>,
    ) -> Result<Option<M::Result>, ClientError> {
        let Some(ev) = self.response(events.id).await?.event else {
            return Ok(None);
        };
        if let Ok(super::api::LaggedEvent { lagged }) = codec::from_value(ev.clone()) {
            return Err(ClientError::Lagged {
                dropped: lagged.dropped,
                message: lagged.message,
            });
        }
        Ok(Some(codec::from_value(ev)?))
    }
}

/// A stream of method `M`'s events, started by [`Client::stream`].
#[derive(Debug)]
pub struct Events<M> {
    id: u64,
    method: PhantomData<M>,
}
