//! The status page: `lattice daemon --http ADDR` serves one small page — peers with their
//! round trips and circuit breakers, documents with digest, replicas and sync lag, blobs,
//! services, recent events — kept up to date by server-sent events. Off by default;
//! loopback only unless `--http-allow-remote`.
//!
//! Every request for data needs the node's token (`<data dir>/http-token`, made on first
//! use), as a `token` query parameter or an `Authorization: Bearer` header: the URL that
//! `lattice status` prints carries it (the log names the file, not the token). The page's
//! script and style are public (they hold no data). On loopback the `Host` header must
//! name loopback too, so a web page that rebinds a name to 127.0.0.1 is refused even
//! before the token. Only event streams keep their connection: every other answer closes
//! it, so a client without the token holds a connection slot no longer than one request.
//!
//! One task renders the state for every open page (at most every [`MIN_UPDATE`], only
//! while a page is open), so open pages cost the node one render, not one each.
//!
//! The assets are compiled into the binary: nothing is fetched at run time.

mod state;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::activity::Activity;
use crate::control::handle::Handlers;

/// Connections served at once (each open page holds one for its event stream); more are
/// closed at once.
const MAX_CONNECTIONS: usize = 16;
/// Event streams (open pages) at once, within [`MAX_CONNECTIONS`].
const MAX_STREAMS: usize = 8;
/// A request's head must arrive this fast.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read.
const MAX_HEAD: usize = 16 << 10;
/// A connection is closed after this long, event stream or not (a page reconnects by
/// itself): a client that stops reading holds its slot no longer.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(10 * 60);
/// An open page is sent the state at most this often...
const MIN_UPDATE: Duration = Duration::from_millis(150);
/// ...and at least this often when something (round trips, uptime) changed.
const MAX_UPDATE: Duration = Duration::from_secs(2);
/// Token file name in the data directory.
const TOKEN_FILE: &str = "http-token";

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "--http {0} is not a loopback address: the status page shows this node's peers and \
         documents to whoever has the token, over plain HTTP; to serve it on the network \
         anyway, add --http-allow-remote (or http_allow_remote = true in config.toml)"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot serve the status page on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("status page token {path}: {why}")]
    Token { path: PathBuf, why: String },
}

/// A bound status page, not yet serving.
pub struct Bound {
    listener: TcpListener,
    token: String,
    local: SocketAddr,
}

impl Bound {
    /// The page's URL, token included.
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.local, self.token)
    }
}

/// Checks the address, loads (or makes) the token and binds.
pub async fn bind(
    addr: SocketAddr,
    allow_remote: bool,
    data_dir: &Path,
) -> Result<Bound, HttpError> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(HttpError::NotLoopback(addr));
    }
    let token = load_or_create_token(&data_dir.join(TOKEN_FILE))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    Ok(Bound {
        listener,
        token,
        local,
    })
}

/// The token: 32 random bytes in hex, kept in `path` (mode 0600) so the page's URL stays
/// the same across restarts. Delete the file to change it.
fn load_or_create_token(path: &Path) -> Result<String, HttpError> {
    let err = |why: String| HttpError::Token {
        path: path.to_owned(),
        why,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                // Others may have read it: it is no secret any more.
                tracing::warn!(path = %path.display(), "the status page token was readable by others; made a new one");
                std::fs::remove_file(path).map_err(|e| err(e.to_string()))?;
                return load_or_create_token(path);
            }
            let t = text.trim();
            if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(t.to_ascii_lowercase())
            } else {
                Err(err(
                    "not 64 hex digits; delete the file and a new token is made".into(),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let bytes: [u8; 32] = rand::random();
            let token = data_encoding::HEXLOWER.encode(&bytes);
            // Written whole to a new file, then renamed into place: a crash leaves either
            // no token or a complete one.
            let tmp = path.with_extension("new");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| err(e.to_string()))?;
            Ok(token)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// What every request is answered from.
struct Ctx {
    handlers: Arc<Handlers>,
    activity: Activity,
    token: String,
    local: SocketAddr,
    shutdown: CancellationToken,
    /// The latest state rendered for open pages ([`render_for_pages`]).
    state: watch::Sender<Option<Arc<str>>>,
    /// Event streams open.
    streams: Arc<tokio::sync::Semaphore>,
}

/// Serves the page until `shutdown`; the task returned ends once every connection is
/// closed, so nothing here holds the handlers after it.
pub(crate) fn serve(
    bound: Bound,
    handlers: Arc<Handlers>,
    activity: Activity,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    info!(addr = %bound.local, "serving the status page (its URL: `lattice status`)");
    let ctx = Arc::new(Ctx {
        handlers,
        activity,
        token: bound.token,
        local: bound.local,
        shutdown: shutdown.clone(),
        state: watch::Sender::new(None),
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
    });
    let listener = bound.listener;
    tokio::spawn(async move {
        let renderer = tokio::spawn(render_for_pages(ctx.clone()));
        let mut conns = JoinSet::new();
        let mut backoff = crate::accept::Backoff::default();
        loop {
            while conns.try_join_next().is_some() {}
            let next = crate::accept::next_tcp(&listener, &mut backoff, "status page", &shutdown);
            let Some(stream) = next.await else { break };
            if conns.len() >= MAX_CONNECTIONS {
                debug!("too many status page connections; closing one");
                continue;
            }
            let ctx = ctx.clone();
            conns.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(answer(&ctx, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .max_buf_size(MAX_HEAD)
                    .serve_connection(TokioIo::new(stream), service);
                // Past its life the connection is simply dropped (a page reconnects).
                if let Ok(Err(e)) = tokio::time::timeout(MAX_CONNECTION_LIFE, conn).await {
                    debug!("status page connection: {e}");
                }
            });
        }
        // Open pages' event streams end with the shutdown; whatever is left is cut.
        conns.shutdown().await;
        renderer.abort();
        let _ = renderer.await;
    })
}

/// Renders the state for open pages: when something happened (after [`MIN_UPDATE`], so
/// a burst is one update) or every [`MAX_UPDATE`], while at least one page is open.
async fn render_for_pages(ctx: Arc<Ctx>) {
    let mut changed = ctx.activity.subscribe();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(MAX_UPDATE) => {}
        }
        if ctx.state.receiver_count() == 0 {
            continue;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(MIN_UPDATE) => {}
        }
        changed.borrow_and_update();
        match state::render(&ctx.handlers, &ctx.activity).await {
            Ok(json) => {
                ctx.state.send_if_modified(|now| {
                    let new = now.as_deref() != Some(json.as_str());
                    if new {
                        *now = Some(json.into());
                    }
                    new
                });
            }
            Err(e) => debug!("status page state: {e}"),
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Full::new(Bytes::from_static(body.as_bytes())).boxed(),
    )
}

/// A whole answer, after which the connection closes.
fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = stream_response(status, content_type, body);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// An answer with the page's security headers.
fn stream_response(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    r
}

async fn answer(ctx: &Ctx, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    if !host_allowed(ctx.local, req.headers().get(header::HOST)) {
        return text(
            StatusCode::FORBIDDEN,
            "unexpected Host header: open the page by the address the daemon listens on\n",
        );
    }
    match req.uri().path() {
        "/app.js" => {
            return respond(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                Full::new(Bytes::from_static(SCRIPT.as_bytes())).boxed(),
            )
        }
        "/app.css" => {
            return respond(
                StatusCode::OK,
                "text/css; charset=utf-8",
                Full::new(Bytes::from_static(STYLE.as_bytes())).boxed(),
            )
        }
        "/" | "/api/state" | "/events" => {}
        _ => return text(StatusCode::NOT_FOUND, "not found: try /\n"),
    }
    if !authorised(&ctx.token, &req) {
        return text(
            StatusCode::UNAUTHORIZED,
            "this page needs the node's token: open the URL that `lattice status` prints\n",
        );
    }
    match req.uri().path() {
        "/" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Full::new(Bytes::from_static(INDEX.as_bytes())).boxed(),
        ),
        "/api/state" => match state::render(&ctx.handlers, &ctx.activity).await {
            Ok(json) => respond(
                StatusCode::OK,
                "application/json",
                Full::new(Bytes::from(json)).boxed(),
            ),
            Err(e) => {
                debug!("status page state: {e}");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the node cannot answer now\n",
                )
            }
        },
        _ => match ctx.streams.clone().try_acquire_owned() {
            Ok(slot) => stream_response(
                StatusCode::OK,
                "text/event-stream",
                StreamBody::new(events(ctx, slot)).boxed(),
            ),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many pages open on this node; close one\n",
            ),
        },
    }
}

/// The token, from the `token` query parameter or an `Authorization: Bearer` header,
/// compared in constant time.
fn authorised(token: &str, req: &Request<Incoming>) -> bool {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_owned)
    });
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned());
    [from_query, from_header]
        .into_iter()
        .flatten()
        .any(|given| {
            given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
        })
}

/// On loopback, the `Host` header must name loopback (defeats DNS rebinding); elsewhere
/// (`--http-allow-remote`) any host is taken and the token alone guards.
fn host_allowed(local: SocketAddr, host: Option<&HeaderValue>) -> bool {
    if !local.ip().is_loopback() {
        return true;
    }
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() && !host.ends_with(']') => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The event stream of one open page: the state now, then each state the renderer
/// publishes; it ends with the daemon. `slot` is its place among [`MAX_STREAMS`].
fn events(
    ctx: &Ctx,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    struct Page {
        handlers: Arc<Handlers>,
        activity: Activity,
        shutdown: CancellationToken,
        state: watch::Receiver<Option<Arc<str>>>,
        first: bool,
        _slot: tokio::sync::OwnedSemaphorePermit,
    }
    let page = Page {
        handlers: ctx.handlers.clone(),
        activity: ctx.activity.clone(),
        shutdown: ctx.shutdown.clone(),
        state: ctx.state.subscribe(),
        first: true,
        _slot: slot,
    };
    futures::stream::unfold(page, |mut p| async move {
        if std::mem::take(&mut p.first) {
            // The first paint does not wait for the next render.
            if let Ok(json) = state::render(&p.handlers, &p.activity).await {
                return Some((Ok(event(&json)), p));
            }
        }
        loop {
            tokio::select! {
                _ = p.shutdown.cancelled() => return None,
                r = p.state.changed() => if r.is_err() { return None },
            }
            let latest = p.state.borrow_and_update().clone();
            if let Some(json) = latest {
                return Some((Ok(event(&json)), p));
            }
        }
    })
}

/// One server-sent event carrying the state (JSON on one line).
fn event(json: &str) -> Frame<Bytes> {
    Frame::data(Bytes::from(format!("event: state\ndata: {json}\n\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_host_names_pass_on_loopback() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let ok = |h: &str| host_allowed(local, Some(&HeaderValue::from_str(h).unwrap()));
        for h in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "[::1]",
            "127.0.0.2:1",
        ] {
            assert!(ok(h), "{h}");
        }
        for h in [
            "evil.example:8080",
            "evil.example",
            "10.0.0.1:8080",
            "localhost.evil:80",
            "",
        ] {
            assert!(!ok(h), "{h}");
        }
        assert!(!host_allowed(local, None));
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(host_allowed(public, None));
    }

    #[test]
    fn the_token_is_made_once_kept_private_and_a_damaged_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        let t = load_or_create_token(&path).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(load_or_create_token(&path).unwrap(), t);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
        // Readable by others: no secret any more, so a new one, private.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = load_or_create_token(&path).unwrap();
        assert_eq!(again.len(), 64);
        assert_ne!(again, t);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "still readable by others: {mode:o}");
        std::fs::write(&path, "short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_or_create_token(&path),
            Err(HttpError::Token { .. })
        ));
    }
}
