//! The peer store: peers this node has met, with the addresses they announced, kept in
//! `lattice.redb` so that a restarted node rejoins the network without `--bootstrap`.
//!
//! The routing table is saved shortly after start, every few minutes, and at shutdown.
//! At start the most recently seen peers are dialled and all of them join the routing
//! table. The store is bounded ([`MAX_PEERS`] peers, [`MAX_ADDRS`] addresses each) and
//! ages out: a peer not seen for [`MAX_AGE`] is forgotten.

use std::collections::HashMap;
use std::time::Duration;

use lattice_overlay::{Addr, Overlay, PeerId, PeerInfo};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::{Change, PeerRecord, Store, StoreError};

/// Peers kept at most; the least recently seen go first.
pub const MAX_PEERS: usize = 256;
/// Addresses kept per peer.
pub const MAX_ADDRS: usize = 8;
/// Longest address kept, in bytes.
const MAX_ADDR_BYTES: usize = 256;
/// A peer not seen for this long is forgotten.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The first save, once the routing table has had time to fill.
const FIRST_SAVE: Duration = Duration::from_secs(15);
const SAVE_EVERY: Duration = Duration::from_secs(300);

/// A peer this node has met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub peer: PeerId,
    pub addrs: Vec<Addr>,
    pub seen_ms: u64,
    /// It served this node as a relay.
    pub relay: bool,
}

impl Known {
    fn record(&self) -> PeerRecord {
        PeerRecord {
            id: self.peer.to_bytes(),
            addrs: self
                .addrs
                .iter()
                .map(|a| serde_bytes::ByteBuf::from(a.to_vec()))
                .collect(),
            seen_ms: self.seen_ms,
            relay: self.relay,
        }
    }

    /// A stored record, if it still decodes (a damaged one is skipped, not fatal).
    fn from_record(r: &PeerRecord) -> Option<Known> {
        let peer = PeerId::from_bytes(&r.id).ok()?;
        let addrs = r
            .addrs
            .iter()
            .filter(|a| a.len() <= MAX_ADDR_BYTES)
            .filter_map(|a| Addr::try_from(a.to_vec()).ok())
            .take(MAX_ADDRS)
            .collect();
        Some(Known {
            peer,
            addrs,
            seen_ms: r.seen_ms,
            relay: r.relay,
        })
    }
}

/// Keeps the most recently seen [`MAX_PEERS`] of `peers`, those seen within
/// [`MAX_AGE`] of `now_ms`, with something to dial, other than `me`; most recent first.
fn tidy(mut peers: Vec<Known>, me: PeerId, now_ms: u64) -> Vec<Known> {
    let oldest = now_ms.saturating_sub(MAX_AGE.as_millis() as u64);
    peers.retain(|k| k.peer != me && k.seen_ms >= oldest && !k.addrs.is_empty());
    peers.sort_by(|a, b| b.seen_ms.cmp(&a.seen_ms).then(a.peer.cmp(&b.peer)));
    peers.truncate(MAX_PEERS);
    peers
}

/// The peers kept from earlier runs, most recently seen first.
pub async fn load(store: &Store, me: PeerId) -> Result<Vec<Known>, StoreError> {
    let records = store.peers().await?;
    let peers = records.iter().filter_map(Known::from_record).collect();
    Ok(tidy(peers, me, crate::now_ms()))
}

/// What the store should hold after seeing the routing table `table` at `now_ms`, given
/// it held `old`: a peer connected now is seen now; one in the table but not connected
/// keeps when it was last seen (now, if it is new); one no longer in the table stays
/// until it ages out.
pub fn merge(
    old: &[Known],
    table: &[PeerInfo],
    relays: &[PeerId],
    me: PeerId,
    now_ms: u64,
) -> Vec<Known> {
    let mut by_peer: HashMap<PeerId, Known> = old.iter().map(|k| (k.peer, k.clone())).collect();
    for p in table {
        let addrs: Vec<Addr> = p
            .addrs
            .iter()
            .filter(|a| a.len() <= MAX_ADDR_BYTES)
            .take(MAX_ADDRS)
            .cloned()
            .collect();
        if addrs.is_empty() {
            continue;
        }
        let before = by_peer.get(&p.peer);
        // Only peers this node has talked to join: a routing-table entry alone may be an
        // address someone else handed out.
        let seen_ms = match before {
            Some(k) if !p.connected => k.seen_ms,
            Some(_) => now_ms,
            None if p.connected => now_ms,
            None => continue,
        };
        let relay = before.is_some_and(|k| k.relay) || relays.contains(&p.peer);
        by_peer.insert(
            p.peer,
            Known {
                peer: p.peer,
                addrs,
                seen_ms,
                relay,
            },
        );
    }
    tidy(by_peer.into_values().collect(), me, now_ms)
}

/// Relays dialled first at start, at most.
const RELAYS_FIRST: usize = 2;

/// Dial order at start: up to [`RELAYS_FIRST`] relays that served this node, then the
/// rest, most recently seen first.
pub fn dial_order(known: &[Known]) -> Vec<(PeerId, Vec<Addr>)> {
    let relays: Vec<&Known> = known
        .iter()
        .filter(|k| k.relay)
        .take(RELAYS_FIRST)
        .collect();
    let rest = known
        .iter()
        .filter(|k| !relays.iter().any(|r| r.peer == k.peer));
    relays
        .iter()
        .copied()
        .chain(rest)
        .map(|k| (k.peer, k.addrs.clone()))
        .collect()
}

/// The changes that turn the stored `old` into `new`.
fn diff(old: &[Known], new: &[Known]) -> Vec<Change> {
    let before: HashMap<PeerId, &Known> = old.iter().map(|k| (k.peer, k)).collect();
    let after: HashMap<PeerId, &Known> = new.iter().map(|k| (k.peer, k)).collect();
    let mut changes: Vec<Change> = new
        .iter()
        .filter(|k| before.get(&k.peer) != Some(k))
        .map(|k| Change::PutPeer(k.record()))
        .collect();
    changes.extend(
        old.iter()
            .filter(|k| !after.contains_key(&k.peer))
            .map(|k| Change::DelPeer(k.peer.to_bytes())),
    );
    changes
}

/// Saves the routing table into the store shortly after start, every few minutes, and
/// once more when `shutdown` is cancelled; then returns.
pub async fn keep(
    overlay: Overlay,
    store: Store,
    mut saved: Vec<Known>,
    shutdown: CancellationToken,
) {
    let me = overlay.peer_id();
    let mut wait = FIRST_SAVE;
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = shutdown.cancelled() => true,
        };
        wait = SAVE_EVERY;
        let relays = match overlay.info().await {
            Ok(info) => info
                .relayed_addrs
                .iter()
                .filter_map(lattice_overlay::circuit_relay)
                .collect(),
            Err(_) => Vec::new(),
        };
        match overlay.routing_table().await {
            Ok(table) => {
                let now = merge(&saved, &table, &relays, me, crate::now_ms());
                let changes = diff(&saved, &now);
                if !changes.is_empty() {
                    debug!(
                        peers = now.len(),
                        changed = changes.len(),
                        "saving known peers"
                    );
                    match store.save_peers(changes).await {
                        Ok(()) => saved = now,
                        Err(e) => warn!("cannot save the known peers: {e}"),
                    }
                }
            }
            Err(e) => debug!("cannot read the routing table: {e}"),
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    fn addr(port: u16) -> Addr {
        format!("/ip4/192.0.2.1/tcp/{port}").parse().unwrap()
    }

    fn info(peer: PeerId, port: u16, connected: bool) -> PeerInfo {
        PeerInfo {
            peer,
            addrs: vec![addr(port)],
            rtt: None,
            connected,
            relayed: false,
            in_dht: true,
            breaker: lattice_overlay::breaker::State::Closed { failures: 0 },
        }
    }

    const DAY: u64 = 24 * 3600 * 1000;

    #[test]
    fn connected_peers_are_seen_now_and_absent_ones_kept_until_they_age_out() {
        let (me, a, b, c) = (peer(), peer(), peer(), peer());
        let t0 = 100 * DAY;
        // A table entry never talked to is not kept.
        let untalked = merge(&[], &[info(b, 2, false)], &[], me, t0);
        assert!(untalked.is_empty());
        let first = merge(&[], &[info(a, 1, true), info(b, 2, true)], &[], me, t0);
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|k| k.seen_ms == t0));

        // A day later: a still connected, b still in the table but not connected, c new;
        // our own id is never kept.
        let t1 = t0 + DAY;
        let table = [info(a, 1, true), info(b, 2, false), info(me, 9, true)];
        let second = merge(&first, &table, &[], me, t1);
        let seen: HashMap<PeerId, u64> = second.iter().map(|k| (k.peer, k.seen_ms)).collect();
        assert_eq!(seen[&a], t1);
        assert_eq!(seen[&b], t0);
        assert!(!seen.contains_key(&me));
        assert_eq!(second[0].peer, a, "most recently seen first");

        // b and c leave the table: b is kept until 30 days after it was last seen.
        let third = merge(&second, &[info(c, 3, true)], &[], me, t0 + 29 * DAY);
        assert_eq!(third.len(), 3);
        let fourth = merge(&third, &[], &[], me, t0 + 31 * DAY);
        let left: Vec<PeerId> = fourth.iter().map(|k| k.peer).collect();
        assert!(left.contains(&c) && left.contains(&a) && !left.contains(&b));
    }

    #[test]
    fn the_store_is_bounded_and_addresses_are_capped() {
        let me = peer();
        let many: Vec<PeerInfo> = (0..MAX_PEERS + 50)
            .map(|i| {
                let mut p = info(peer(), i as u16, true);
                p.addrs = (0..20).map(addr).collect();
                p
            })
            .collect();
        let kept = merge(&[], &many, &[], me, DAY);
        assert_eq!(kept.len(), MAX_PEERS);
        assert!(kept.iter().all(|k| k.addrs.len() == MAX_ADDRS));
    }

    #[test]
    fn records_round_trip_and_damaged_ones_are_skipped() {
        let k = Known {
            peer: peer(),
            addrs: vec![addr(4001)],
            seen_ms: 7,
            relay: true,
        };
        assert_eq!(Known::from_record(&k.record()), Some(k.clone()));
        let mut bad = k.record();
        bad.id = vec![1, 2, 3];
        assert_eq!(Known::from_record(&bad), None);
        let mut bad_addr = k.record();
        bad_addr.addrs = vec![serde_bytes::ByteBuf::from(vec![0xff; 4])];
        assert_eq!(
            Known::from_record(&bad_addr).map(|k| k.addrs.len()),
            Some(0)
        );
    }

    #[test]
    fn relays_are_remembered_and_dialled_first() {
        let (me, a, r) = (peer(), peer(), peer());
        let circuit: Addr = format!("/ip4/192.0.2.9/tcp/1/p2p/{r}/p2p-circuit/p2p/{me}")
            .parse()
            .unwrap();
        assert_eq!(lattice_overlay::circuit_relay(&circuit), Some(r));
        assert_eq!(lattice_overlay::circuit_relay(&addr(1)), None);
        let kept = merge(&[], &[info(a, 1, true), info(r, 2, true)], &[r], me, DAY);
        assert!(kept.iter().any(|k| k.peer == r && k.relay));
        assert_eq!(
            dial_order(&kept)[0].0,
            r,
            "the relay first, though seen as long ago"
        );
        let later = merge(&kept, &[info(r, 2, false)], &[], me, 2 * DAY);
        assert!(
            later.iter().any(|k| k.peer == r && k.relay),
            "a relay stays one"
        );
    }

    #[test]
    fn only_what_changed_is_written() {
        let me = peer();
        let (a, b) = (peer(), peer());
        let old = merge(&[], &[info(a, 1, true), info(b, 2, true)], &[], me, DAY);
        let same = merge(
            &old,
            &[info(a, 1, false), info(b, 2, false)],
            &[],
            me,
            2 * DAY,
        );
        assert!(diff(&old, &same).is_empty());
        let moved = merge(&old, &[info(a, 5, false)], &[], me, 2 * DAY);
        let changes = diff(&old, &moved);
        assert_eq!(changes.len(), 1);
        assert!(matches!(&changes[0], Change::PutPeer(r) if r.id == a.to_bytes()));
        let gone = diff(&old, &old[..1]);
        assert!(matches!(&gone[..], [Change::DelPeer(_)]));
    }
}
