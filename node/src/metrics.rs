//! Prometheus metrics: libp2p's (recorded by the overlay) plus Lattice's own, served as
//! text on `--metrics ADDR` at `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    outcome: &'static str,
}

/// Lattice's own metrics.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    peers: Gauge,
    deltas_applied: Counter,
    deltas_rejected: Counter,
    sync_bytes_sent: Family<SyncLabels, Counter>,
    sync_lag: Family<DocLabels, Histogram>,
    behind: Family<DocLabels, Gauge>,
}

/// One document (hosted here: the label set grows with hosted documents only).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DocLabels {
    doc: String,
}

/// Which path a sync message took.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    /// `gossip` (a new delta published on the document's topic) or `repair` (anti-entropy).
    path: &'static str,
}

impl Metrics {
    /// Creates the metrics and registers them under `lattice_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 4.0, 10))
            }),
            peers: Gauge::default(),
            deltas_applied: Counter::default(),
            deltas_rejected: Counter::default(),
            sync_bytes_sent: Family::default(),
            // 5 ms to 41 s.
            sync_lag: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            behind: Family::default(),
        };
        let sub = registry.sub_registry_with_prefix("lattice");
        sub.register(
            "control_requests",
            "Control socket requests, by method and outcome",
            m.requests.clone(),
        );
        sub.register(
            "control_request_seconds",
            "Control request latency",
            m.latency.clone(),
        );
        sub.register(
            "connected_peers",
            "Peers with an open connection",
            m.peers.clone(),
        );
        sub.register(
            "deltas_applied",
            "Document deltas applied (local writes and peers' deltas)",
            m.deltas_applied.clone(),
        );
        sub.register(
            "deltas_rejected",
            "Document deltas or sync messages refused (bad signature, not a writer, malformed)",
            m.deltas_rejected.clone(),
        );
        sub.register(
            "sync_bytes_sent",
            "Bytes of document sync messages sent, by path (gossip or anti-entropy repair)",
            m.sync_bytes_sent.clone(),
        );
        sub.register(
            "doc_sync_lag_seconds",
            "Time from a peer's write (its hybrid logical clock) to its application here, by document",
            m.sync_lag.clone(),
        );
        sub.register(
            "doc_behind_deltas",
            "Writes known from peers (summaries, deltas seen) but not yet applied here, by document",
            m.behind.clone(),
        );
        m
    }

    /// A peer's write to `doc` was applied here `lag_ms` after it was written.
    pub fn sync_lag(&self, doc: &lattice_crdt::DocId, lag_ms: u64) {
        self.sync_lag
            .get_or_create(&DocLabels {
                doc: doc.to_string(),
            })
            .observe(lag_ms as f64 / 1_000.0);
    }

    /// How many known writes `doc` still lacks here.
    pub fn doc_behind(&self, doc: &lattice_crdt::DocId, behind: u64) {
        let behind = i64::try_from(behind).unwrap_or(i64::MAX);
        let labels = DocLabels {
            doc: doc.to_string(),
        };
        // A document never behind costs no series.
        if behind != 0 || self.behind.get(&labels).is_some() {
            self.behind.get_or_create(&labels).set(behind);
        }
    }

    pub fn delta_applied(&self) {
        self.deltas_applied.inc();
    }

    pub fn delta_rejected(&self) {
        self.deltas_rejected.inc();
    }

    /// Bytes of a delta published by gossip.
    pub fn gossip_sent(&self, bytes: usize) {
        self.sync_bytes_sent
            .get_or_create(&SyncLabels { path: "gossip" })
            .inc_by(bytes as u64);
    }

    /// Bytes of an anti-entropy message (summary or batch of deltas) sent to a peer.
    pub fn repair_sent(&self, bytes: usize) {
        self.sync_bytes_sent
            .get_or_create(&SyncLabels { path: "repair" })
            .inc_by(bytes as u64);
    }

    /// One control request; `method` is a name from the method table, or `unknown` (so a
    /// client cannot grow the label set).
    pub fn control_request(&self, method: &'static str, elapsed: Duration, ok: bool) {
        let labels = RequestLabels {
            method: method.to_owned(),
            outcome: if ok { "ok" } else { "error" },
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn peer_connected(&self) {
        self.peers.inc();
    }

    pub fn peer_disconnected(&self) {
        self.peers.dec();
    }
}

/// Largest HTTP request head read.
const MAX_HEAD: usize = 8 << 10;
/// Scrapes served at once; more connections are closed at once (a scraper needs one).
const MAX_SCRAPES: usize = 8;
/// Reading the request and writing the answer each get this long.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves `/metrics` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving metrics");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    tokio::spawn(async move {
        let mut backoff = crate::accept::Backoff::default();
        loop {
            let next = crate::accept::next_tcp(&listener, &mut backoff, "metrics", &shutdown);
            let Some(mut stream) = next.await else { return };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!("too many metrics connections; closing one");
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut head = vec![0u8; MAX_HEAD];
                let mut n = 0;
                let read = tokio::time::timeout(SCRAPE_TIMEOUT, async {
                    while n < head.len() && !head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut head[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let (status, ctype, body) = if head[..n].starts_with(b"GET /metrics") {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => (
                            "200 OK",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            body,
                        ),
                        Err(e) => ("500 Internal Server Error", "text/plain", e.to_string()),
                    }
                } else {
                    ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                match tokio::time::timeout(SCRAPE_TIMEOUT, stream.write_all(resp.as_bytes())).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!("metrics response not sent: {e}"),
                    Err(_) => debug!("metrics response not taken in time"),
                }
            });
        }
    });
    Ok(())
}
