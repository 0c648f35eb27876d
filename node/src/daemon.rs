//! The daemon: starts every part in order, serves the control socket, and on SIGINT or
//! SIGTERM stops in order (stop accepting, finish in-flight requests, stop the overlay,
//! remove the socket).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_overlay::{Event, Protocol};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::activity::Activity;
use crate::auth::NodeAuth;
use crate::blobs::Blobs;
use crate::config::{Config, ConfigError};
use crate::control::handle::Handlers;
use crate::control::server::{Server, ServerError};
use crate::docs::{Docs, DocsError};
use crate::http;
use crate::identity::{self, IdentityError};
use crate::lock::{DataDirLock, LockError};
use crate::metrics::{self, Metrics};
use crate::services::Services;
use crate::store::Store;
use crate::topics::Topics;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network: {0}")]
    Overlay(#[from] lattice_overlay::Error),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Auth(#[from] crate::auth::NotEd25519),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot restore the advertised services: {0}")]
    Services(String),
    #[error(
        "the store {path} cannot be opened ({source}); if it is damaged, stop here, move it \
         aside (for example to {path}.broken) and start again: the node rejoins its \
         documents with `lattice doc join` and recovers its own writes from their replicas"
    )]
    StoreUnreadable {
        path: PathBuf,
        source: crate::store::StoreError,
    },
    #[error("cannot choose the listen port: {0}")]
    Port(#[from] crate::ports::PortError),
    #[error("cannot load documents: {0}")]
    Docs(#[from] DocsError),
    #[error("cannot open the blob store: {0}")]
    Blobs(#[from] crate::blobs::BlobError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
}

/// Runs a daemon until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let shutdown = CancellationToken::new();
    let mut signals = JoinSet::new();
    for kind in [
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::terminate(),
    ] {
        let mut s = tokio::signal::unix::signal(kind).map_err(DaemonError::Signals)?;
        let token = shutdown.clone();
        signals.spawn(async move {
            if s.recv().await.is_some() {
                info!("signal received; shutting down");
                token.cancel();
            }
        });
    }
    let r = run_until(config, shutdown).await;
    signals.abort_all();
    r
}

/// Runs a daemon until `shutdown` is cancelled.
pub async fn run_until(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let dir = &config.data_dir;
    let io = |source| DaemonError::DataDir {
        path: dir.clone(),
        source,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let _lock = DataDirLock::acquire(dir)?;
    let key = identity::load_or_create(&dir.join("identity.key"))?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let auth = Arc::new(NodeAuth::new(&key)?);
    let mut net = lattice_overlay::Config::new(key);
    if !config.listen.is_empty() {
        net.listen = config.listen.clone();
    }
    net.bootstrap = config.bootstrap.clone();
    net.mdns = config.mdns;
    net.upnp = config.upnp;
    net.dht_mode = config.dht_mode;
    net.relay_service = config.relay_service;
    net.relay_limits = config.relay_limits;
    net.reachability = config.reachability;
    net.target = config.connection_target;
    if config.profile == crate::config::Profile::Small {
        // Input in the node's hands and answers not yet taken, all peers together; one
        // peer's share stays as it is (a blob piece must fit).
        net.max_connections = 64;
        net.max_inbound_bytes = 16 << 20;
        net.max_outbound_bytes = 32 << 20;
    }
    let limit = net.max_connections as usize;
    if net.target.high > limit {
        warn!(
            high = net.target.high,
            limit, "the connection target is above the connection limit; using the limit"
        );
        net.target.high = limit;
        net.target.low = net.target.low.min(limit);
    }
    if let Some(path) = &config.psk_file {
        net.psk = Some(crate::config::read_psk(path)?);
        // The pre-shared key protects TCP connections only.
        net.listen.retain(|a| {
            !a.iter()
                .any(|p| matches!(p, lattice_overlay::AddrPart::QuicV1))
        });
        info!("private swarm: pre-shared key in use, QUIC disabled");
    }
    net.listen = crate::ports::stable(&net.listen, dir, config.port)?;
    let db = dir.join("lattice.redb");
    let (store, store_thread) = Store::open_cached(&db, config.store_cache).map_err(|source| {
        DaemonError::StoreUnreadable {
            path: db.clone(),
            source,
        }
    })?;
    let known = crate::peer_store::load(&store, net.keypair.public().to_peer_id()).await?;
    if !known.is_empty() {
        info!(peers = known.len(), "rejoining through peers met before");
    }
    net.known_peers = crate::peer_store::dial_order(&known);
    let (overlay, events, overlay_task) = lattice_overlay::spawn(net, Some(&mut registry)).await?;
    let mut keeper = tokio::spawn(crate::peer_store::keep(
        overlay.clone(),
        store.clone(),
        known,
        shutdown.clone(),
    ));
    let blobs = Blobs::open(dir, store.clone(), overlay.clone(), config.blob_quota).await?;
    let services = Services::open(overlay.clone(), store.clone())
        .await
        .map_err(|e| DaemonError::Services(e.to_string()))?;
    let activity = Activity::default();
    let (doc_events_tx, doc_events) = mpsc::channel(crate::docs::EVENT_QUEUE);
    let (docs, docs_task) = Docs::spawn(
        overlay.clone(),
        store,
        auth,
        doc_events,
        metrics.clone(),
        activity.clone(),
        config.compaction_horizon,
    )
    .await?;
    let server = Server::bind(&config.socket).await?;
    let page = match config.http {
        Some(addr) => Some(http::bind(addr, config.http_allow_remote, dir).await?),
        None => None,
    };
    let registry = Arc::new(registry);
    if let Some(addr) = config.metrics {
        metrics::serve(addr, registry.clone(), shutdown.clone())
            .await
            .map_err(|source| DaemonError::Metrics { addr, source })?;
    }

    let mut tasks = JoinSet::new();
    let topics = Topics::new(overlay.clone());
    tasks.spawn(dispatch_events(
        events,
        metrics.clone(),
        doc_events_tx,
        activity.clone(),
        Routes {
            blobs: blobs.clone(),
            services: services.clone(),
            topics: topics.clone(),
        },
    ));
    let daemon = Arc::new(Handlers {
        overlay: overlay.clone(),
        docs,
        blobs,
        services,
        topics,
        started: Instant::now(),
        data_dir: dir.clone(),
        metrics,
        status_page: page.as_ref().map(http::Bound::url),
    });
    let page = page.map(|p| {
        info!(
            token_file = %dir.join("http-token").display(),
            "status page on; `lattice status` prints its URL with the token"
        );
        http::serve(p, daemon.clone(), activity, shutdown.clone())
    });
    info!(
        peer_id = %overlay.peer_id(),
        socket = %server.path().display(),
        data_dir = %dir.display(),
        "lattice daemon ready"
    );
    drop(overlay);
    server.serve(daemon, shutdown, config.shutdown_grace).await;
    // The page's connections end with the shutdown and let go of the handlers.
    if let Some(mut page) = page {
        if tokio::time::timeout(Duration::from_secs(5), &mut page)
            .await
            .is_err()
        {
            page.abort();
            warn!("the status page did not stop in time");
        }
    }
    // The peer keeper saves the routing table one last time.
    if tokio::time::timeout(Duration::from_secs(5), &mut keeper)
        .await
        .is_err()
    {
        // Stopped, so it lets go of the store and the overlay.
        keeper.abort();
        warn!("the known peers were not saved in time");
    }

    // The server has returned, so the handler and its handles are gone: the documents
    // actor finishes its queued commits and stops, releasing the store and its overlay
    // handle. The overlay task ends once the last handle is dropped.
    tasks.shutdown().await;
    if tokio::time::timeout(Duration::from_secs(10), docs_task)
        .await
        .is_err()
    {
        warn!("documents did not stop in time");
    }
    // Once its last handle is gone the store commits what was queued and exits; a blob
    // fetch still running may hold a handle, so do not wait for ever.
    let joined = tokio::task::spawn_blocking(move || store_thread.join());
    if tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .is_err()
    {
        warn!("storage still in use at shutdown; exiting without waiting for it");
    }
    match tokio::time::timeout(Duration::from_secs(5), overlay_task).await {
        Ok(_) => {}
        Err(_) => warn!("overlay did not stop in time"),
    }
    info!("lattice daemon stopped");
    Ok(())
}

/// Where overlay events for the resource subsystems go.
struct Routes {
    blobs: Blobs,
    services: Services,
    topics: Topics,
}

/// Routes overlay events: requests on the blob and service protocols to their servers,
/// gossip on application topics to local subscribers, peer counts to the metrics, the rest
/// to documents. A subsystem that falls behind loses events rather than stalling the
/// others; what it lost is repaired by anti-entropy or retried by the sender.
async fn dispatch_events(
    mut events: mpsc::Receiver<Event>,
    metrics: Metrics,
    docs: mpsc::Sender<Event>,
    activity: Activity,
    routes: Routes,
) {
    let mut dropped = 0u64;
    while let Some(e) = events.recv().await {
        match e {
            Event::Request {
                peer,
                protocol: Protocol::Blob,
                data,
                responder,
            } => {
                routes.blobs.serve(peer, data, responder);
                continue;
            }
            Event::Request {
                peer,
                protocol: Protocol::Service,
                data,
                responder,
            } => {
                routes.services.serve(peer, &data, responder);
                continue;
            }
            Event::Gossip {
                topic,
                source,
                author,
                id,
                data,
                ..
            } if crate::topics::app_topic(&topic).is_some() => {
                routes.topics.deliver(&topic, author, id, source, data);
                continue;
            }
            Event::Subscribed {
                ref peer,
                ref topic,
            } => routes.topics.track(topic, *peer, true),
            Event::Unsubscribed {
                ref peer,
                ref topic,
            } => routes.topics.track(topic, *peer, false),
            Event::PeerConnected { ref peer, .. } => {
                metrics.peer_connected();
                activity.push("peer", format!("{peer} connected"));
            }
            Event::PeerDisconnected { ref peer } => {
                metrics.peer_disconnected();
                activity.push("peer", format!("{peer} disconnected"));
                routes.topics.forget(peer);
            }
            _ => {}
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = docs.try_send(e) {
            dropped += 1;
            warn!(dropped, "documents are not keeping up with overlay events");
        }
    }
}
