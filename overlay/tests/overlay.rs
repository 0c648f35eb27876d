//! Overlays in one process on 127.0.0.1: dialing, the DHT, request-response, gossip and
//! the allow/block list. Every wait is bounded by a timeout so nothing hangs.

use std::time::Duration;

use lattice_overlay::{spawn, Config, Event, Keypair, Overlay, Protocol, Verdict};
use libp2p::Multiaddr;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

async fn node(bootstrap: Vec<Multiaddr>) -> (Overlay, Receiver<Event>) {
    node_with(bootstrap, |_| {}).await
}

async fn node_with(
    bootstrap: Vec<Multiaddr>,
    tweak: impl FnOnce(&mut Config),
) -> (Overlay, Receiver<Event>) {
    let mut cfg = Config::new(Keypair::generate_ed25519());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.mdns = false;
    cfg.upnp = false;
    cfg.bootstrap = bootstrap;
    cfg.request_timeout = Duration::from_secs(5);
    tweak(&mut cfg);
    let (o, rx, _task) = spawn(cfg, None).await.expect("overlay starts");
    (o, rx)
}

async fn addr_of(o: &Overlay) -> Multiaddr {
    let info = o.info().await.unwrap();
    let a: Multiaddr = info.listen_addrs[0].clone();
    a.with(libp2p::multiaddr::Protocol::P2p(o.peer_id()))
}

/// Polls `check` every 100 ms until it holds, or fails after `LIMIT`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let r = timeout(LIMIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {what}");
}

#[tokio::test]
async fn request_response_round_trip() {
    let (a, _arx) = node(vec![]).await;
    let (b, mut brx) = node(vec![]).await;
    let b_overlay = b.clone();
    // B answers every sync request with the bytes reversed.
    tokio::spawn(async move {
        while let Some(ev) = brx.recv().await {
            if let Event::Request {
                data,
                responder,
                protocol,
                ..
            } = ev
            {
                assert_eq!(protocol, Protocol::Sync);
                let mut r = data;
                r.reverse();
                b_overlay.respond(responder, r).unwrap();
            }
        }
    });
    assert_eq!(a.dial(addr_of(&b).await).await.unwrap(), b.peer_id());
    let resp = timeout(
        LIMIT,
        a.request(b.peer_id(), Protocol::Sync, b"abc".to_vec()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp, b"cba");
}

#[tokio::test]
async fn a_request_to_a_silent_peer_times_out() {
    let (a, _arx) = node(vec![]).await;
    let (b, _brx) = node(vec![]).await; // never answers
    a.dial(addr_of(&b).await).await.unwrap();
    let r = timeout(LIMIT, a.request(b.peer_id(), Protocol::Sync, vec![1]))
        .await
        .unwrap();
    assert!(r.is_err(), "a request nobody answers must fail, not hang");
}

/// libp2p's default filter dropped a peer's subscriptions past 100 topics: a node hosting
/// 101 documents was a replica of none of them to its peers.
#[tokio::test]
async fn a_peer_subscribed_to_many_topics_is_seen_on_every_one() {
    const TOPICS: usize = 300;
    let (a, _arx) = node(vec![]).await;
    let (b, mut brx) = node(vec![]).await;
    for i in 0..TOPICS {
        a.subscribe(format!("t{i}")).await.unwrap();
    }
    b.dial(addr_of(&a).await).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let all = timeout(LIMIT, async {
        while seen.len() < TOPICS {
            match brx.recv().await {
                Some(Event::Subscribed { peer, topic }) if peer == a.peer_id() => {
                    seen.insert(topic);
                }
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    assert!(all.is_ok(), "B saw A on {} of {TOPICS} topics", seen.len());
}

#[tokio::test]
async fn gossip_is_delivered_after_validation() {
    let (a, _arx) = node(vec![]).await;
    let (b, mut brx) = node(vec![]).await;
    a.subscribe("t").await.unwrap();
    b.subscribe("t").await.unwrap();
    a.dial(addr_of(&b).await).await.unwrap();
    let got = timeout(LIMIT, async {
        loop {
            a.publish("t", b"hello".to_vec()).await.unwrap();
            if let Ok(Some(Event::Gossip {
                topic,
                data,
                id,
                source,
                author,
                ..
            })) = timeout(Duration::from_millis(300), async {
                loop {
                    match brx.recv().await {
                        Some(e @ Event::Gossip { .. }) => return Some(e),
                        Some(_) => continue,
                        None => return None,
                    }
                }
            })
            .await
            {
                b.report_gossip(id, source, Verdict::Accept).unwrap();
                assert_eq!(author, Some(a.peer_id()));
                return (topic, data);
            }
        }
    })
    .await
    .expect("gossip arrives");
    assert_eq!(got, ("t".to_owned(), b"hello".to_vec()));
}

#[tokio::test]
async fn the_dht_introduces_peers_that_share_only_a_bootstrap_node() {
    let (a, _arx) = node(vec![]).await;
    let boot = addr_of(&a).await;
    let (b, _brx) = node(vec![boot.clone()]).await;
    let (c, _crx) = node(vec![boot]).await;
    let b_id = b.peer_id();
    eventually("C's routing table to hold B", || async {
        c.peers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.peer == b_id && p.in_dht)
    })
    .await;
    let only_id: Multiaddr = format!("/p2p/{}", b.peer_id()).parse().unwrap();
    assert_eq!(c.dial(only_id).await.unwrap(), b.peer_id());
}

#[tokio::test]
async fn blocking_disconnects_and_keeps_out_until_unblocked() {
    let (a, _arx) = node(vec![]).await;
    let (b, _brx) = node(vec![]).await;
    let a_addr = addr_of(&a).await;
    b.dial(a_addr.clone()).await.unwrap();
    a.block(vec![b.peer_id()]).await.unwrap();
    eventually("A to drop B", || async {
        a.info().await.unwrap().connected_peers == 0
    })
    .await;
    assert!(
        b.dial(a_addr.clone()).await.is_err(),
        "a blocked peer must not get back in"
    );
    a.unblock(vec![b.peer_id()]).await.unwrap();
    assert_eq!(b.dial(a_addr).await.unwrap(), a.peer_id());
}

#[tokio::test]
async fn allow_only_drops_everyone_else() {
    let (a, _arx) = node(vec![]).await;
    let (b, _brx) = node(vec![]).await;
    let (c, _crx) = node(vec![]).await;
    let a_addr = addr_of(&a).await;
    b.dial(a_addr.clone()).await.unwrap();
    c.dial(a_addr.clone()).await.unwrap();
    a.allow_only(vec![b.peer_id()]).await.unwrap();
    let b_id = b.peer_id();
    eventually("A to keep only B", || async {
        let peers = a.peers().await.unwrap();
        let connected: Vec<_> = peers
            .iter()
            .filter(|p| p.connected)
            .map(|p| p.peer)
            .collect();
        connected == [b_id]
    })
    .await;
    assert!(c.dial(a_addr.clone()).await.is_err());
    a.allow_all().await.unwrap();
    assert_eq!(c.dial(a_addr).await.unwrap(), a.peer_id());
}

fn psk(byte: u8) -> lattice_overlay::PreSharedKey {
    lattice_overlay::PreSharedKey::new([byte; 32])
}

async fn private_node(key: Option<lattice_overlay::PreSharedKey>) -> (Overlay, Receiver<Event>) {
    let mut cfg = Config::new(Keypair::generate_ed25519());
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg.mdns = false;
    cfg.upnp = false;
    cfg.psk = key;
    cfg.request_timeout = Duration::from_secs(3);
    let (o, rx, _task) = spawn(cfg, None).await.expect("overlay starts");
    (o, rx)
}

#[tokio::test]
async fn a_private_swarm_admits_only_holders_of_its_key() {
    let (a, _arx) = private_node(Some(psk(1))).await;
    let (b, _brx) = private_node(Some(psk(1))).await;
    let (stranger, _srx) = private_node(Some(psk(2))).await;
    let (public, _prx) = private_node(None).await;
    let a_addr = addr_of(&a).await;
    assert_eq!(
        timeout(LIMIT, b.dial(a_addr.clone()))
            .await
            .unwrap()
            .unwrap(),
        a.peer_id()
    );
    assert!(
        timeout(LIMIT, stranger.dial(a_addr.clone()))
            .await
            .unwrap()
            .is_err(),
        "a wrong key must not handshake"
    );
    assert!(
        timeout(LIMIT, public.dial(a_addr)).await.unwrap().is_err(),
        "no key must not handshake"
    );
}

#[tokio::test]
async fn connection_events_come_once_per_peer_however_many_connections() {
    let (a, mut arx) = node(vec![]).await;
    let (b, _brx) = node(vec![]).await;
    let addr = addr_of(&a).await;
    for _ in 0..3 {
        b.dial(addr.clone()).await.unwrap();
    }
    a.block(vec![b.peer_id()]).await.unwrap();
    let (mut up, mut down) = (0, 0);
    let _ = timeout(Duration::from_secs(5), async {
        while let Some(e) = arx.recv().await {
            match e {
                Event::PeerConnected { peer, .. } if peer == b.peer_id() => up += 1,
                Event::PeerDisconnected { peer } if peer == b.peer_id() => {
                    down += 1;
                    return;
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!((up, down), (1, 1));
}

#[tokio::test]
async fn requests_over_a_peers_byte_budget_never_reach_the_node() {
    const MIB: usize = 1 << 20;
    let (a, mut arx) = node_with(vec![], |c| c.max_inbound_bytes_per_peer = 3 * MIB).await;
    let (b, _brx) = node(vec![]).await;
    b.dial(addr_of(&a).await).await.unwrap();
    // Ten 1 MiB requests at once, none answered yet.
    let mut calls = Vec::new();
    for _ in 0..10 {
        let b = b.clone();
        let peer = a.peer_id();
        calls.push(tokio::spawn(async move {
            b.request(peer, Protocol::Sync, vec![7; MIB]).await
        }));
    }
    let mut held = Vec::new();
    while let Ok(Some(e)) = timeout(Duration::from_secs(3), arx.recv()).await {
        if let Event::Request { responder, .. } = e {
            held.push(responder);
        }
    }
    assert_eq!(held.len(), 3, "1 MiB requests within a 3 MiB share");
    // The others failed at the sender without waiting for the request timeout.
    let mut failed = 0;
    for c in calls.drain(..) {
        if let Ok(Ok(Err(_))) = timeout(Duration::from_millis(100), c).await {
            failed += 1;
        }
    }
    assert_eq!(failed, 7);
    // Answering gives the bytes back: the next request arrives.
    for r in held {
        a.respond(r, b"ok".to_vec()).unwrap();
    }
    let peer = a.peer_id();
    // Seven refusals in a row opened B's circuit breaker on A: the request goes once the
    // back-off it names is over.
    let late = tokio::spawn(async move {
        loop {
            match b.request(peer, Protocol::Sync, vec![1; MIB]).await {
                Err(lattice_overlay::Error::Unavailable(_, wait)) => {
                    tokio::time::sleep(wait + Duration::from_millis(10)).await
                }
                other => return other,
            }
        }
    });
    let got = timeout(LIMIT, async {
        loop {
            if let Some(Event::Request { .. }) = arx.recv().await {
                return true;
            }
        }
    })
    .await;
    assert_eq!(got, Ok(true));
    late.abort();
}

#[tokio::test]
async fn responses_over_a_peers_outbound_budget_are_not_sent() {
    const MIB: usize = 1 << 20;
    let (a, mut arx) = node_with(vec![], |c| c.max_outbound_bytes_per_peer = MIB).await;
    let (b, _brx) = node(vec![]).await;
    b.dial(addr_of(&a).await).await.unwrap();
    let a2 = a.clone();
    // A answers each request with as many bytes as the request's first byte says (MiB/4).
    tokio::spawn(async move {
        while let Some(e) = arx.recv().await {
            if let Event::Request {
                data, responder, ..
            } = e
            {
                a2.respond(responder, vec![0; data[0] as usize * MIB / 4])
                    .unwrap();
            }
        }
    });
    let ask = |quarters: u8| {
        let b = b.clone();
        let peer = a.peer_id();
        async move {
            timeout(LIMIT, b.request(peer, Protocol::Sync, vec![quarters]))
                .await
                .expect("answered or failed in time")
        }
    };
    assert_eq!(ask(2).await.unwrap().len(), MIB / 2);
    assert!(ask(8).await.is_err(), "2 MiB is over a 1 MiB share");
    // What was sent was given back: the share is whole again.
    for _ in 0..3 {
        assert_eq!(ask(3).await.unwrap().len(), 3 * MIB / 4);
    }
}

#[tokio::test]
async fn idle_peers_beyond_the_target_are_trimmed_and_the_gossip_mesh_stays() {
    let idle = Duration::from_secs(3);
    // low = high: every check trims whatever idle excess there is.
    let (hub, _hrx) = node_with(vec![], |c| {
        c.target = lattice_overlay::ConnectionTarget {
            low: 2,
            high: 2,
            idle,
        };
    })
    .await;
    hub.subscribe("doc").await.unwrap();
    let boot = addr_of(&hub).await;
    // DHT clients, so none is a routing-table neighbour the manager would keep.
    let mut leaves = Vec::new();
    for _ in 0..8 {
        leaves.push(node_with(vec![], |c| c.dht_mode = lattice_overlay::DhtMode::Client).await);
    }
    // A replica of the hub's document: in its gossip mesh.
    leaves[0].0.subscribe("doc").await.unwrap();
    for (leaf, _) in &leaves {
        leaf.dial(boot.clone()).await.unwrap();
    }
    eventually("the hub to trim its idle peers to the low mark", || async {
        let info = hub.info().await.unwrap();
        info.connected_peers <= 2 && info.trimmed >= 6
    })
    .await;
    // The replica never lost its connection to the hub (a trimmed peer may dial back,
    // so being connected now would not prove it).
    let (replica, events) = &mut leaves[0];
    let hub_id = hub.peer_id();
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::PeerDisconnected { peer } if peer == hub_id),
            "the mesh peer was trimmed"
        );
    }
    let peers = hub.peers().await.unwrap();
    assert!(peers
        .iter()
        .any(|p| p.peer == replica.peer_id() && p.connected));
}

#[tokio::test]
async fn a_peer_whose_requests_keep_failing_is_cut_off_by_its_breaker() {
    use lattice_overlay::breaker::{State, FAILURES_TO_OPEN};
    let (a, _arx) = node(vec![]).await;
    let (b, mut brx) = node(vec![]).await;
    // B drops every request unanswered: each of A's fails at once.
    tokio::spawn(async move { while brx.recv().await.is_some() {} });
    a.dial(addr_of(&b).await).await.unwrap();
    let ask = || a.request(b.peer_id(), Protocol::Sync, b"ping".to_vec());
    assert!(!a.failing(&b.peer_id()));
    for i in 0..FAILURES_TO_OPEN {
        let r = timeout(LIMIT, ask()).await.expect("a failure, in time");
        assert!(
            matches!(r, Err(lattice_overlay::Error::Request(_))),
            "request {i}: {r:?}"
        );
    }
    // Now requests fail at once, without reaching B.
    let r = timeout(Duration::from_millis(500), ask())
        .await
        .expect("fails fast");
    assert!(
        matches!(r, Err(lattice_overlay::Error::Unavailable(p, _)) if p == b.peer_id()),
        "{r:?}"
    );
    let seen = a.peers().await.unwrap();
    let bp = seen
        .iter()
        .find(|p| p.peer == b.peer_id())
        .expect("B listed");
    assert!(matches!(bp.breaker, State::Open { .. }), "{:?}", bp.breaker);
    // Callers choosing among peers see it, and put B last.
    assert!(a.failing(&b.peer_id()));
}
