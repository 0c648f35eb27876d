//! Peers of other implementations, played by plain rust-libp2p swarms on 127.0.0.1: one
//! that names itself with another identify protocol version, and ones with secp256k1 and
//! ECDSA identities (as go- and js-libp2p nodes may have). Each speaks Lattice's Kademlia
//! in server mode, dials a Lattice overlay, and must end up in its routing table.

use std::time::Duration;

use futures::StreamExt;
use lattice_overlay::{spawn, Config, Keypair, Overlay};
use libp2p::identity;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
struct Foreign {
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
}

fn foreign(key: identity::Keypair) -> Swarm<Foreign> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let cfg = kad::Config::new(StreamProtocol::new("/lattice/kad/1.0.0"));
            let mut kad = kad::Behaviour::with_config(id, MemoryStore::new(id), cfg);
            kad.set_mode(Some(kad::Mode::Server));
            Foreign {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/other-implementation/0.1".into(),
                    key.public(),
                )),
                kad,
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(LIMIT))
        .build()
}

async fn lattice() -> Overlay {
    let mut cfg = Config::new(Keypair::generate_ed25519());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.mdns = false;
    cfg.upnp = false;
    let (o, _events, _task) = spawn(cfg, None).await.expect("overlay starts");
    o
}

/// Runs a foreign peer with `key` that dials `o`; returns its peer id once `o` holds it in
/// its routing table.
async fn joins_the_routing_table(o: &Overlay, key: identity::Keypair) -> PeerId {
    let mut swarm = foreign(key);
    let me = *swarm.local_peer_id();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let target: Multiaddr = o.info().await.unwrap().listen_addrs[0].clone();
    swarm.dial(target).unwrap();
    let drive = tokio::spawn(async move {
        loop {
            if let SwarmEvent::OutgoingConnectionError { error, .. } =
                swarm.select_next_some().await
            {
                panic!("the foreign peer could not connect: {error}");
            }
        }
    });
    let found = timeout(LIMIT, async {
        loop {
            let table = o.routing_table().await.unwrap();
            if table.iter().any(|p| p.peer == me) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    drive.abort();
    assert!(found.is_ok(), "{me} never joined the routing table");
    me
}

#[tokio::test]
async fn a_peer_with_another_identify_version_that_speaks_our_kademlia_is_admitted() {
    let o = lattice().await;
    joins_the_routing_table(&o, identity::Keypair::generate_ed25519()).await;
}

#[tokio::test]
async fn secp256k1_and_ecdsa_peers_can_connect() {
    let o = lattice().await;
    joins_the_routing_table(&o, identity::Keypair::generate_secp256k1()).await;
    joins_the_routing_table(&o, identity::Keypair::generate_ecdsa()).await;
}
