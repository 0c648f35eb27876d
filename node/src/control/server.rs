//! The control socket server: a Unix socket (0600, in a 0700 directory we create) that
//! only the daemon's own user may use, speaking the frames of [`super::codec`].
//!
//! Each connection: `Hello` both ways, then requests answered in order. A malformed or
//! oversized frame gets an error answer and closes that connection only; an unknown method
//! gets an error answer and the connection stays open. On shutdown the server stops
//! accepting, lets every connection finish the request it is running, removes the socket
//! and returns.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::api::{
    method, ApiError, Call, Command, ErrorCode, Hello, Method, Request, Response, PROTOCOL_VERSION,
};
use super::codec::{self, FrameError};

/// Clients served at once; more are told `busy` and closed.
pub const MAX_CLIENTS: usize = 64;
/// Spare connections for newcomers when [`MAX_CLIENTS`] are taken (by idle clients,
/// streams or stalled clients, say): they answer only [`RESERVE_METHODS`], once, and are
/// closed after [`RESERVE_IDLE`] without a request, so a new client can always get
/// `status`.
pub const RESERVE: usize = 4;
/// A client must say hello this fast.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no request and no stream for this long is closed (`idle`).
pub const IDLE: Duration = Duration::from_secs(60);
/// The same for a connection in the reserve.
pub const RESERVE_IDLE: Duration = Duration::from_secs(5);
/// Methods a connection in the reserve may call; it is closed after one answer.
pub const RESERVE_METHODS: [&str; 2] = [
    <method::Id as Call>::METHOD.name,
    <method::Status as Call>::METHOD.name,
];
/// A client must take each frame this fast, or its connection is closed: one that stops
/// reading cannot hold a slot (or a stream) by making the daemon wait on it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shutdown notice may take to write.
const NOTICE_TIMEOUT: Duration = Duration::from_millis(200);

/// Events a streaming method may have queued for a slow client before it must wait.
pub const STREAM_QUEUE: usize = 256;

/// What a call returns: one value, or a stream of events ended by an `end` frame.
pub enum Answer {
    Value(serde_cbor::Value),
    /// Events until the sender is dropped, the client sends anything or closes, or the
    /// daemon shuts down.
    Stream(tokio::sync::mpsc::Receiver<serde_cbor::Value>),
}

/// Answers calls. Implemented by the daemon.
pub trait Handler: Send + Sync + 'static {
    /// Answers one call (the server answers unknown methods and parameters that do not
    /// decode itself).
    fn call(&self, command: Command) -> impl Future<Output = Result<Answer, ApiError>> + Send;
    /// Called after every request, for metrics. `method` is the method table's name for
    /// the request's method, or `unknown`.
    fn observe(&self, _method: &'static str, _elapsed: Duration, _ok: bool) {}
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("another lattice daemon is already listening on {0} (stop it first, or use another --socket)")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot create the control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds the socket, replacing a stale one left by a crash but refusing to take over
    /// from a live daemon.
    pub async fn bind(path: &Path) -> Result<Server, ServerError> {
        let io = |source| ServerError::Io {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(io)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ServerError::NotASocket(path.into()));
            }
            let live =
                tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await;
            if matches!(live, Ok(Ok(_))) {
                return Err(ServerError::InUse(path.into()));
            }
            info!(path = %path.display(), "replacing a stale control socket");
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(Server {
            listener,
            path: path.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown` is cancelled, then drains connections for at most `grace`
    /// and removes the socket.
    pub async fn serve<H: Handler>(
        self,
        handler: Arc<H>,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        let reserve = Arc::new(Semaphore::new(RESERVE));
        let mut conns = JoinSet::new();
        let me = nix::unistd::geteuid().as_raw();
        let mut next_conn = 0u64;
        let mut backoff = crate::accept::Backoff::default();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
                // Reap finished connections as we go so the set stays small.
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            let (stream, _) = match accepted {
                Ok(s) => {
                    backoff.reset();
                    s
                }
                Err(e) => {
                    let pause = backoff.failed("control socket", &e);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            };
            next_conn += 1;
            let permit = match slots.clone().try_acquire_owned() {
                Ok(p) => Some((p, false)),
                Err(_) => reserve.clone().try_acquire_owned().ok().map(|p| (p, true)),
            };
            let (handler, shutdown) = (handler.clone(), shutdown.clone());
            let span = tracing::debug_span!("control", conn = next_conn);
            conns.spawn(
                async move {
                    match permit {
                        Some((_permit, reserve)) => {
                            connection(stream, me, handler, shutdown, reserve).await
                        }
                        None => refuse_busy(stream).await,
                    }
                }
                .instrument(span),
            );
        }
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
        let drained =
            tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(
                remaining = conns.len(),
                "control connections still busy at shutdown; closing them"
            );
            conns.shutdown().await;
        }
    }
}

async fn refuse_busy(mut stream: UnixStream) {
    let e = ApiError::new(
        ErrorCode::Busy,
        format!(
            "the daemon already serves {} clients; try again",
            MAX_CLIENTS + RESERVE
        ),
    );
    let _ = send(&mut stream, &Response::err(0, e), WRITE_TIMEOUT).await;
}

/// Writes one frame, giving up (an error) if the client does not take it in `within`.
async fn send<W: tokio::io::AsyncWrite + Unpin, T: serde::Serialize>(
    wr: &mut W,
    value: &T,
    within: Duration,
) -> Result<(), FrameError> {
    let bytes = codec::encode(value)?;
    tokio::time::timeout(within, codec::write_encoded(wr, &bytes))
        .await
        .map_err(|_| {
            FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read",
            ))
        })?
}

async fn connection<H: Handler>(
    stream: UnixStream,
    me: u32,
    handler: Arc<H>,
    shutdown: CancellationToken,
    reserve: bool,
) {
    let idle = if reserve { RESERVE_IDLE } else { IDLE };
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me => {}
        Ok(cred) => {
            warn!(
                uid = cred.uid(),
                "refused a control connection from another user"
            );
            return;
        }
        Err(e) => {
            warn!("cannot check the control client's credentials: {e}");
            return;
        }
    }
    let (mut rd, mut wr) = stream.into_split();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        let bytes = codec::read_frame_max(&mut rd, codec::MAX_HELLO).await?;
        codec::check_items(&bytes, 16)?;
        codec::decode::<Hello>(&bytes)
    })
    .await;
    let hello = match hello {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return answer_frame_error(&mut wr, e).await,
        Err(_) => return,
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let msg = format!(
            "protocol version {} is not supported; this daemon speaks {PROTOCOL_VERSION}",
            hello.protocol_version
        );
        let e = ApiError::new(ErrorCode::UnsupportedVersion, msg);
        let _ = send(&mut wr, &Response::err(0, e), WRITE_TIMEOUT).await;
        return;
    }
    let ours = Hello {
        protocol_version: PROTOCOL_VERSION,
        agent: format!("lattice/{}", env!("CARGO_PKG_VERSION")),
    };
    if send(&mut wr, &ours, WRITE_TIMEOUT).await.is_err() {
        return;
    }
    let mut agent = hello.agent;
    super::shorten(&mut agent);
    debug!(%agent, reserve, "client connected");
    loop {
        let frame = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let e = ApiError::new(ErrorCode::Unavailable, "the daemon is shutting down");
                let _ = send(&mut wr, &Response::err(0, e), NOTICE_TIMEOUT).await;
                return;
            }
            f = tokio::time::timeout(idle, codec::read_frame_max(&mut rd, codec::MAX_REQUEST)) => match f {
                Ok(f) => f,
                Err(_) => {
                    let e = ApiError::new(
                        ErrorCode::Idle,
                        format!("closing a connection idle for {} s", idle.as_secs()),
                    );
                    let _ = send(&mut wr, &Response::err(0, e), WRITE_TIMEOUT).await;
                    return;
                }
            },
        };
        let req = match frame.and_then(|b| {
            codec::check_items(&b, codec::MAX_ITEMS)?;
            codec::decode::<Request>(&b)
        }) {
            Ok(r) => r,
            Err(e) => return answer_frame_error(&mut wr, e).await,
        };
        let started = Instant::now();
        let result = if reserve && !RESERVE_METHODS.contains(&req.method.as_str()) {
            Err(ApiError::new(
                ErrorCode::Busy,
                format!(
                    "the daemon serves {MAX_CLIENTS} clients; this spare connection answers \
                     only {RESERVE_METHODS:?}; try again"
                ),
            ))
        } else {
            let command = match Method::named(&req.method) {
                None => Err(super::unknown_method(&req.method)),
                Some(_) => super::check_params(&req.params)
                    .and_then(|()| Command::parse(&req.method, req.params)),
            };
            match command {
                Ok(c) => handler.call(c).await,
                Err(e) => Err(e),
            }
        };
        let label = Method::named(&req.method).map_or("unknown", |m| m.name);
        handler.observe(label, started.elapsed(), result.is_ok());
        let resp = match result {
            Ok(Answer::Value(v)) => Response::ok(req.id, v),
            Ok(Answer::Stream(rx)) => {
                if !stream_events(&rd, &mut wr, req.id, rx, &shutdown).await {
                    debug!(id = req.id, "a stream's client stopped reading; closing it");
                    return;
                }
                if shutdown.is_cancelled() {
                    // The stream's end says it all; no second notice.
                    let end = Response {
                        id: req.id,
                        end: true,
                        ..Default::default()
                    };
                    let _ = send(&mut wr, &end, NOTICE_TIMEOUT).await;
                    return;
                }
                Response {
                    id: req.id,
                    end: true,
                    ..Default::default()
                }
            }
            Err(e) => Response::err(req.id, e),
        };
        if answer(&mut wr, resp).await.is_err() || reserve {
            return;
        }
    }
}

/// Writes a response; one too large for a frame becomes a `result_too_large` error for
/// the same request, and the connection stays usable.
async fn answer<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    resp: Response,
) -> Result<(), FrameError> {
    match send(wr, &resp, WRITE_TIMEOUT).await {
        Err(FrameError::TooLarge(n)) => {
            let e = ApiError::new(
                ErrorCode::ResultTooLarge,
                format!(
                    "the answer is {n} bytes, over the {}-byte frame limit; ask for less \
                     (for example one key of a document)",
                    codec::MAX_FRAME
                ),
            );
            send(wr, &Response::err(resp.id, e), WRITE_TIMEOUT).await
        }
        other => other,
    }
}

/// Resolves once the client has sent bytes or closed, without consuming anything.
async fn client_spoke(rd: &tokio::net::unix::OwnedReadHalf) {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let sock: &UnixStream = rd.as_ref();
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        let mut byte = [0u8; 1];
        // Readiness may be spurious: peek to be sure, and clear it if nothing is there.
        let peeked = sock.try_io(tokio::io::Interest::READABLE, || {
            recv(
                sock.as_raw_fd(),
                &mut byte,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from)
        });
        match peeked {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// Forwards a stream's events until it ends, the client speaks or goes away, or shutdown;
/// the caller then sends the `end` frame. Waiting for the client to become readable does
/// not consume its bytes, so a request sent to stop the stream is answered next. False if
/// a frame could not be written (the client stopped reading for [`WRITE_TIMEOUT`], or
/// left): the connection must then close without an `end`, which would tell the client
/// it had every event.
async fn stream_events(
    rd: &tokio::net::unix::OwnedReadHalf,
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    id: u64,
    mut rx: tokio::sync::mpsc::Receiver<serde_cbor::Value>,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let e = ApiError::new(ErrorCode::Unavailable, "the daemon is shutting down");
                let _ = send(wr, &Response::err(id, e), NOTICE_TIMEOUT).await;
                return true;
            }
            _ = client_spoke(rd) => return true,
            ev = rx.recv() => {
                let Some(event) = ev else { return true };
                let frame = Response {
                    id,
                    event: Some(event),
                    ..Default::default()
                };
                // An event too large for a frame ends the stream with `result_too_large`
                // rather than leave a gap in it.
                match send(wr, &frame, WRITE_TIMEOUT).await {
                    Ok(()) => {}
                    Err(FrameError::TooLarge(n)) => {
                        let e = ApiError::new(
                            ErrorCode::ResultTooLarge,
                            format!("an event of {n} bytes does not fit in a frame; the stream ends"),
                        );
                        let _ = send(wr, &Response::err(id, e), WRITE_TIMEOUT).await;
                        return true;
                    }
                    Err(_) => return false,
                }
            }
        }
    }
}

/// Tells the client what was wrong with its frame (the connection then closes).
async fn answer_frame_error<W: tokio::io::AsyncWrite + Unpin>(wr: &mut W, e: FrameError) {
    let error = match e {
        FrameError::Closed | FrameError::Io(_) => return,
        FrameError::TooLarge(n) => ApiError::new(
            ErrorCode::FrameTooLarge,
            format!(
                "frame of {n} bytes exceeds the limit ({} bytes for a request, {} for a hello)",
                codec::MAX_REQUEST,
                codec::MAX_HELLO
            ),
        ),
        FrameError::Malformed(m) => ApiError::new(ErrorCode::MalformedFrame, m),
    };
    debug!(%error, "bad frame; closing the connection");
    let _ = send(wr, &Response::err(0, error), WRITE_TIMEOUT).await;
}
