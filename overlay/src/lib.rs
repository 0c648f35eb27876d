//! Lattice's overlay network: one task owns the libp2p swarm; the node drives it through
//! a cloneable [`Overlay`] handle and hears from it on an [`Event`] stream.
//!
//! The overlay knows peers, topics, protocols and bytes — never documents or blobs.
//!
//! - [`config`]: [`Config`] and [`DhtMode`].
//! - [`protocols`]: versioned protocol names (`/lattice/kad/1.0.0`, `/lattice/sync/1`, …).
//! - `behaviour`: the composed behaviour (Kademlia, identify, ping, mDNS, gossipsub,
//!   autonat, relay client, DCUtR, UPnP, request-response, limits) and the transports.
//! - [`access`]: the allow/block list.
//! - [`buffers`]: large buffers kept for reuse by bulk answers.
//! - [`codec`]: bounded length-prefixed frames for request-response.
//! - [`handle`]: [`Overlay`], its commands and snapshots.
//! - `event_loop`: the swarm task.
//! - [`event`]: [`Event`]s for the node.
//! - [`error`]: the error type, [`Error`].

pub mod access;
mod behaviour;
pub mod breaker;
pub mod buffers;
pub mod codec;
pub mod config;
pub mod error;
pub mod event;
mod event_loop;
pub mod handle;
pub mod policy;
pub mod protocols;
mod relay_server;
pub mod store;

use std::collections::HashSet;

use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::Multiaddr;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

pub use behaviour::MAX_TOPICS_PER_PEER;
pub use config::{Config, ConnectionTarget, DhtMode, Reachability, RelayLimits};
pub use error::Error;
pub use event::{Event, GossipId, Responder, Verdict};
pub use event_loop::{circuit_relay, Mapping, Observed};
pub use handle::{Info, Nat, Overlay, PeerInfo};
pub use libp2p::identity::{self, Keypair};
pub use libp2p::multiaddr::Protocol as AddrPart;
pub use libp2p::pnet::{KeyParseError, PreSharedKey};
pub use libp2p::{Multiaddr as Addr, PeerId, StreamProtocol};
pub use protocols::Protocol;

/// Events waiting for the node; beyond this they are dropped and counted.
pub const EVENT_CAPACITY: usize = 1_024;

/// Starts the overlay: listens on every configured address (returning once each has an
/// address, or with an error), dials the bootstrap peers, and runs the swarm task.
/// `registry`, if given, receives libp2p's metrics. Must be called within a tokio runtime.
pub async fn spawn(
    config: Config,
    mut registry: Option<&mut Registry>,
) -> Result<(Overlay, mpsc::Receiver<Event>, JoinHandle<()>), Error> {
    // Bytes on the wire are counted either way; without a registry nobody reads them.
    let mut unread = Registry::default();
    let mut swarm =
        behaviour::build_swarm(&config, registry.as_deref_mut().unwrap_or(&mut unread))?;
    let peer_id = *swarm.local_peer_id();
    let mut waiting = HashSet::new();
    for addr in &config.listen {
        let id = swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        waiting.insert((id, addr.clone()));
    }
    // Wait (bounded) until each listener has an address, so the node can report them.
    let deadline = tokio::time::Instant::now() + config.request_timeout;
    while !waiting.is_empty() {
        let Ok(event) = tokio::time::timeout_at(deadline, swarm.select_next_some()).await else {
            let addrs: Vec<String> = waiting.iter().map(|(_, a)| a.to_string()).collect();
            return Err(Error::Listen {
                addr: addrs.join(", "),
                reason: "no listen address in time".into(),
            });
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                info!(%address, "listening");
                waiting.retain(|(id, _)| *id != listener_id);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some((_, addr)) = waiting.iter().find(|(id, _)| *id == listener_id) {
                    let reason = reason
                        .err()
                        .map_or_else(|| "closed".to_owned(), |e| e.to_string());
                    return Err(Error::Listen {
                        addr: addr.to_string(),
                        reason,
                    });
                }
            }
            _ => {}
        }
    }
    for (peer, addrs) in &config.known_peers {
        for addr in addrs {
            swarm.behaviour_mut().kad.add_address(peer, addr.clone());
        }
    }
    for (peer, addrs) in config.known_peers.iter().take(config::REJOIN_DIALS) {
        let opts = DialOpts::peer_id(*peer).addresses(addrs.clone()).build();
        if let Err(e) = swarm.dial(opts) {
            debug!(%peer, "dial to a known peer failed: {e}");
        }
    }
    for addr in &config.bootstrap {
        if let Some(AddrPart::P2p(peer)) = addr.iter().last() {
            let transport: Multiaddr = addr
                .iter()
                .filter(|p| !matches!(p, AddrPart::P2p(_)))
                .collect();
            swarm.behaviour_mut().kad.add_address(&peer, transport);
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, "bootstrap dial failed: {e}");
        }
    }
    let (tx, commands) = mpsc::channel(handle::COMMAND_CAPACITY);
    let (events, rx) = mpsc::channel(EVENT_CAPACITY);
    let breaker_metrics = registry
        .as_deref_mut()
        .map(breaker::BreakerMetrics::register);
    let metrics = registry.map(libp2p::metrics::Metrics::new);
    let budgets = (
        policy::Budget::new(config.max_inbound_bytes, config.max_inbound_bytes_per_peer),
        policy::Budget::new(
            config.max_outbound_bytes,
            config.max_outbound_bytes_per_peer,
        ),
    );
    let event_loop = event_loop::EventLoop::new(
        swarm,
        commands,
        events,
        &config,
        (metrics, breaker_metrics),
        budgets,
        policy::RateLimit::new(
            config.max_inbound_per_sec,
            tokio::time::Instant::now().into_std(),
        ),
    );
    let tripped = event_loop.tripped();
    let task = tokio::spawn(
        event_loop
            .run()
            .instrument(tracing::info_span!("overlay", peer = %peer_id)),
    );
    Ok((
        Overlay {
            tx,
            peer_id,
            tripped,
            timeout: config.request_timeout,
            bulk_timeout: config.bulk_request_timeout,
        },
        rx,
        task,
    ))
}
