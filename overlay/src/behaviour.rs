//! The composed network behaviour, and the swarm built around it.

use std::time::Duration;

use libp2p::core::upgrade;
use libp2p::identity::Keypair;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::ProtocolSupport;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, memory_connection_limits,
    noise, ping, relay, request_response, tcp, yamux, Swarm, SwarmBuilder, Transport,
};

use crate::codec::FrameCodec;
use crate::config::{Config, DhtMode};
use crate::error::Error;
use crate::relay_server::RelayServer;
use crate::{access, protocols, store};

/// Every protocol a Lattice node speaks, composed. The allow/block list and the limits
/// come first so they refuse connections before anything else spends on them.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub access: access::Behaviour,
    pub limits: connection_limits::Behaviour,
    pub memory: memory_connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<store::Store>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub gossipsub: gossipsub::Behaviour,
    pub autonat: autonat::Behaviour,
    pub relay: relay::client::Behaviour,
    /// Circuit relay v2 for peers that cannot be reached (see [`Config::relay_service`]).
    pub relay_server: Toggle<RelayServer>,
    pub dcutr: dcutr::Behaviour,
    pub upnp: Toggle<Upnp>,
    /// `/lattice/sync/1`: document anti-entropy.
    pub sync: request_response::Behaviour<FrameCodec>,
    /// `/lattice/blob/1`: verified blob chunk ranges.
    pub blob: request_response::Behaviour<FrameCodec>,
    /// `/lattice/service/1`: service metadata.
    pub service: request_response::Behaviour<FrameCodec>,
    /// `/lattice/digest/1`: digests of shared documents.
    pub digest: request_response::Behaviour<FrameCodec>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// UPnP port mapping, or nothing in a build without it.
#[cfg(feature = "upnp")]
pub(crate) type Upnp = libp2p::upnp::tokio::Behaviour;
#[cfg(not(feature = "upnp"))]
pub(crate) type Upnp = libp2p::swarm::dummy::Behaviour;

fn upnp(on: bool) -> Option<Upnp> {
    #[cfg(feature = "upnp")]
    return on.then(Upnp::default);
    #[cfg(not(feature = "upnp"))]
    {
        if on {
            tracing::info!("UPnP is not in this build");
        }
        None
    }
}

/// How long an idle connection stays open: long enough for the DHT and gossip to use it.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest request on a bulk protocol (a blob request names at most 64 ranges).
const MAX_BULK_REQUEST: usize = 64 << 10;
/// Pending connection attempts allowed each way.
const MAX_PENDING_CONNECTIONS: u32 = 64;
/// Gossip topics one peer may be subscribed to (as seen here), and may announce in one
/// message: a node hosting more documents than this is a replica of the rest to nobody.
pub const MAX_TOPICS_PER_PEER: usize = 4_096;

fn behaviour(
    cfg: &Config,
    key: &Keypair,
    relay: relay::client::Behaviour,
) -> Result<Behaviour, BoxError> {
    let peer_id = key.public().to_peer_id();

    let mut kad_cfg = kad::Config::new(protocols::KAD);
    kad_cfg.set_query_timeout(cfg.request_timeout * 3);
    kad_cfg.set_periodic_bootstrap_interval(Some(cfg.bootstrap_interval));
    // Provider records (blobs, documents, services) live twice the republication interval
    // unless their provider publishes them again, which the event loop does key by key on
    // a spread-out schedule (`event_loop/republish.rs`) rather than kad's all-at-once job:
    // a node that stops, or withdraws, disappears from lookups within that time.
    kad_cfg.set_provider_record_ttl(Some(cfg.provider_republish * 2));
    kad_cfg.set_provider_publication_interval(None);
    let mut kad = kad::Behaviour::with_config(peer_id, store::Store::new(peer_id), kad_cfg);
    kad.set_mode(match cfg.dht_mode {
        DhtMode::Server => Some(kad::Mode::Server),
        DhtMode::Client => Some(kad::Mode::Client),
        DhtMode::Auto => None,
    });

    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(cfg.max_gossip_bytes)
        .heartbeat_interval(Duration::from_secs(1))
        .build()?;
    // libp2p's default filter ignores a peer's subscriptions past 100 topics (and an RPC
    // carrying more than 100): a node hosting 101 documents lost its replicas.
    let topics = gossipsub::MaxCountSubscriptionFilter {
        filter: gossipsub::AllowAllSubscriptionFilter {},
        max_subscribed_topics: MAX_TOPICS_PER_PEER,
        max_subscriptions_per_request: MAX_TOPICS_PER_PEER,
    };
    let gossipsub = gossipsub::Behaviour::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossip_cfg,
        topics,
    )?;

    let mdns = if cfg.mdns {
        Some(mdns::tokio::Behaviour::new(
            mdns::Config::default(),
            peer_id,
        )?)
    } else {
        None
    };
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(cfg.max_connections))
        .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
        .with_max_pending_incoming(Some(MAX_PENDING_CONNECTIONS))
        .with_max_pending_outgoing(Some(MAX_PENDING_CONNECTIONS));
    let rr = |protocol, timeout, max_request| {
        request_response::Behaviour::with_codec(
            FrameCodec {
                max_request,
                max_response: cfg.max_response_bytes,
            },
            [(protocol, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(timeout),
        )
    };

    Ok(Behaviour {
        access: access::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        memory: memory_connection_limits::Behaviour::with_max_percentage(cfg.max_memory_fraction),
        identify: identify::Behaviour::new(
            identify::Config::new(protocols::IDENTIFY_VERSION.to_owned(), key.public())
                .with_agent_version(format!("lattice/{}", env!("CARGO_PKG_VERSION"))),
        ),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
        kad,
        mdns: mdns.into(),
        gossipsub,
        autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
        relay,
        relay_server: cfg
            .serves_relay()
            .then(|| relay_server(peer_id, &cfg.relay_limits))
            .into(),
        dcutr: dcutr::Behaviour::new(peer_id),
        upnp: upnp(cfg.upnp).into(),
        sync: rr(protocols::SYNC, cfg.request_timeout, cfg.max_request_bytes),
        // Blob requests name ranges and are small; only their answers are bulk. libp2p's
        // deadline covers both ways, so a small cap keeps a peer that trickles a request
        // in for the long deadline from holding much.
        blob: rr(
            protocols::BLOB,
            cfg.bulk_request_timeout,
            cfg.max_request_bytes.min(MAX_BULK_REQUEST),
        ),
        service: rr(
            protocols::SERVICE,
            cfg.request_timeout,
            cfg.max_request_bytes,
        ),
        digest: rr(
            protocols::DIGEST,
            cfg.request_timeout,
            cfg.max_request_bytes.min(MAX_BULK_REQUEST),
        ),
    })
}

fn relay_server(peer_id: libp2p::PeerId, l: &crate::config::RelayLimits) -> RelayServer {
    let config = relay::Config {
        max_reservations: l.max_reservations,
        max_reservations_per_peer: l.max_reservations_per_peer,
        reservation_duration: l.reservation_duration,
        max_circuits: l.max_circuits,
        max_circuits_per_peer: l.max_circuits_per_peer,
        // libp2p refuses durations beyond u32::MAX seconds.
        max_circuit_duration: l
            .max_circuit_duration
            .min(Duration::from_secs(u32::MAX.into())),
        max_circuit_bytes: l.max_circuit_bytes,
        ..Default::default()
    };
    RelayServer::new(peer_id, config)
}

/// Builds the swarm: TCP+Noise+Yamux, QUIC (unless built without) and DNS, or with a
/// pre-shared key TCP through
/// the private-network handshake (QUIC cannot carry one), plus the relay client. Bytes on
/// the wire, per transport stack and direction, are counted in `registry`
/// (`libp2p_bandwidth_bytes_total`).
pub(crate) fn build_swarm(
    cfg: &Config,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<Swarm<Behaviour>, Error> {
    let transport_err = |e: &dyn std::fmt::Display| Error::Transport(e.to_string());
    let swarm_cfg =
        |c: libp2p::swarm::Config| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT);
    let builder = SwarmBuilder::with_existing_identity(cfg.keypair.clone()).with_tokio();
    // The same after the transports, whichever they are (the builder's type differs).
    macro_rules! finish {
        ($b:expr) => {
            $b.with_dns()
                .map_err(|e| transport_err(&e))?
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .map_err(|e| transport_err(&e))?
                .with_bandwidth_metrics(registry)
                .with_behaviour(|key, relay| behaviour(cfg, key, relay))
                .map_err(|e| transport_err(&e))?
                .with_swarm_config(swarm_cfg)
                .build()
        };
    }
    let swarm = match cfg.psk {
        Some(psk) => finish!(builder
            .with_other_transport(|key| -> Result<_, BoxError> {
                let noise = noise::Config::new(key)?;
                Ok(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(upgrade::Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default())
                        .timeout(Duration::from_secs(20)),
                )
            })
            .map_err(|e| transport_err(&e))?),
        None => {
            let tcp = builder
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(|e| transport_err(&e))?;
            #[cfg(feature = "quic")]
            let tcp = tcp.with_quic();
            finish!(tcp)
        }
    };
    Ok(swarm)
}
