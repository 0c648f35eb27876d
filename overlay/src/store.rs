//! The Kademlia record store: this node's own provider records apart from everyone
//! else's, so strangers can never crowd ours out.
//!
//! libp2p's `MemoryStore` keeps every provider record in one map whose size limit also
//! caps the keys this node provides: a stranger announcing 1,024 keys made our own
//! `start_providing` fail until its records expired (and they are only purged when looked
//! up). Here our own records live in a store of their own, bounded only by
//! [`MAX_OWN_KEYS`]; records from other peers are bounded in total ([`MAX_REMOTE_KEYS`]),
//! per announcing peer ([`MAX_KEYS_PER_PEER`]), per key ([`MAX_PROVIDERS_PER_KEY`]) and in
//! the addresses each may carry, and expired ones are purged on a schedule.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::kad::store::{self, MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;

/// Keys this node may provide itself (blobs, documents and services together).
pub const MAX_OWN_KEYS: usize = 1 << 20;
/// Provider records accepted from other peers, all keys together.
pub const MAX_REMOTE_KEYS: usize = 16_384;
/// Keys one other peer may have us remember it provides.
pub const MAX_KEYS_PER_PEER: usize = 256;
/// Providers remembered per key (Kademlia's replication factor).
pub const MAX_PROVIDERS_PER_KEY: usize = 20;
/// Addresses kept per remote provider record.
const MAX_ADDRS: usize = 8;
/// Value records (PUT_VALUE) stored for others; Lattice itself uses none.
const MAX_RECORDS: usize = 256;
const MAX_RECORD_BYTES: usize = 4 << 10;
/// How often expired remote records are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

pub struct Store {
    local: PeerId,
    /// Our own provider records, and value records.
    own: MemoryStore,
    remote: HashMap<RecordKey, Vec<ProviderRecord>>,
    remote_len: usize,
    per_peer: HashMap<PeerId, usize>,
    next_purge: Instant,
}

impl Store {
    pub fn new(local: PeerId) -> Self {
        let config = MemoryStoreConfig {
            max_records: MAX_RECORDS,
            max_value_bytes: MAX_RECORD_BYTES,
            max_provided_keys: MAX_OWN_KEYS,
            max_providers_per_key: 1,
        };
        Store {
            local,
            own: MemoryStore::with_config(local, config),
            remote: HashMap::new(),
            remote_len: 0,
            per_peer: HashMap::new(),
            next_purge: Instant::now() + PURGE_EVERY,
        }
    }

    /// Provider records held for other peers.
    pub fn remote_len(&self) -> usize {
        self.remote_len
    }

    fn purge_if_due(&mut self, now: Instant) {
        if now < self.next_purge {
            return;
        }
        self.next_purge = now + PURGE_EVERY;
        let expired: Vec<(RecordKey, PeerId)> = self
            .remote
            .values()
            .flatten()
            .filter(|r| r.is_expired(now))
            .map(|r| (r.key.clone(), r.provider))
            .collect();
        for (key, provider) in expired {
            self.remove_remote(&key, &provider);
        }
    }

    fn remove_remote(&mut self, key: &RecordKey, provider: &PeerId) {
        let Some(list) = self.remote.get_mut(key) else {
            return;
        };
        let before = list.len();
        list.retain(|r| &r.provider != provider);
        if list.len() == before {
            return;
        }
        if list.is_empty() {
            self.remote.remove(key);
        }
        self.remote_len -= 1;
        if let Some(n) = self.per_peer.get_mut(provider) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(provider);
            }
        }
    }

    fn add_remote(&mut self, mut record: ProviderRecord) -> store::Result<()> {
        record.addresses.truncate(MAX_ADDRS);
        let list = self.remote.entry(record.key.clone()).or_default();
        if let Some(old) = list.iter_mut().find(|r| r.provider == record.provider) {
            *old = record;
            return Ok(());
        }
        let peer_keys = self.per_peer.get(&record.provider).copied().unwrap_or(0);
        let full = list.len() >= MAX_PROVIDERS_PER_KEY
            || peer_keys >= MAX_KEYS_PER_PEER
            || self.remote_len >= MAX_REMOTE_KEYS;
        if full {
            if list.is_empty() {
                self.remote.remove(&record.key);
            }
            // Not an error to the remote: like a full key in libp2p's own store, the
            // record is quietly not kept.
            return Ok(());
        }
        *self.per_peer.entry(record.provider).or_insert(0) += 1;
        list.push(record);
        self.remote_len += 1;
        Ok(())
    }
}

impl RecordStore for Store {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.own.get(k)
    }

    fn put(&mut self, r: Record) -> store::Result<()> {
        self.own.put(r)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.own.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.own.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        if record.provider == self.local {
            return self.own.add_provider(record);
        }
        self.purge_if_due(Instant::now());
        self.add_remote(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut all = self.own.providers(key);
        if let Some(remote) = self.remote.get(key) {
            all.extend(remote.iter().cloned());
        }
        all
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.own.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        if *p == self.local {
            self.own.remove_provider(k, p);
        } else {
            self.remove_remote(k, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> RecordKey {
        RecordKey::new(&i.to_be_bytes())
    }

    fn record(k: u64, provider: PeerId, ttl: Duration) -> ProviderRecord {
        ProviderRecord {
            key: key(k),
            provider,
            expires: Some(Instant::now() + ttl),
            addresses: Vec::new(),
        }
    }

    #[test]
    fn strangers_cannot_crowd_out_our_own_provider_records() {
        let me = PeerId::random();
        let mut s = Store::new(me);
        // Many strangers announce as much as they may, and more.
        for stranger in 0..(MAX_REMOTE_KEYS / MAX_KEYS_PER_PEER + 2) {
            let peer = PeerId::random();
            for k in 0..MAX_KEYS_PER_PEER as u64 + 10 {
                let k = (stranger as u64) << 32 | k;
                s.add_provider(record(k, peer, Duration::from_secs(1800)))
                    .unwrap();
            }
        }
        assert_eq!(s.remote_len(), MAX_REMOTE_KEYS);
        assert!(s.per_peer.values().all(|n| *n <= MAX_KEYS_PER_PEER));
        // Our own records still go in, far past libp2p's default of 1,024.
        for k in 0..5_000 {
            s.add_provider(record(u64::MAX - k, me, Duration::from_secs(1800)))
                .unwrap();
        }
        assert_eq!(s.provided().count(), 5_000);
        assert_eq!(s.providers(&key(u64::MAX)).len(), 1);
    }

    #[test]
    fn expired_remote_records_are_purged_and_free_their_peer_budget() {
        let mut s = Store::new(PeerId::random());
        let peer = PeerId::random();
        for k in 0..MAX_KEYS_PER_PEER as u64 {
            s.add_provider(record(k, peer, Duration::ZERO)).unwrap();
        }
        assert_eq!(s.per_peer[&peer], MAX_KEYS_PER_PEER);
        s.purge_if_due(Instant::now() + PURGE_EVERY);
        assert_eq!(s.remote_len(), 0);
        assert!(s.per_peer.is_empty() && s.remote.is_empty());
        s.add_provider(record(1, peer, Duration::from_secs(60)))
            .unwrap();
        assert_eq!(s.providers(&key(1)).len(), 1);
        s.remove_provider(&key(1), &peer);
        assert_eq!(s.remote_len(), 0);
    }

    #[test]
    fn a_record_carries_a_bounded_number_of_addresses() {
        let mut s = Store::new(PeerId::random());
        let mut r = record(1, PeerId::random(), Duration::from_secs(60));
        r.addresses = (0..100)
            .map(|i| format!("/ip4/127.0.0.1/tcp/{}", 1000 + i).parse().unwrap())
            .collect();
        s.add_provider(r).unwrap();
        assert_eq!(s.providers(&key(1))[0].addresses.len(), MAX_ADDRS);
    }
}
