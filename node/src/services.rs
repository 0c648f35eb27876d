//! Services: named capabilities (`sensor.temperature`, `gpu.render`) a node advertises as
//! DHT provider records, with metadata it serves on `/lattice/service/1`.
//!
//! `find` asks the DHT for providers, then asks each one (in parallel, bounded) whether it
//! still offers the service: that answer carries the metadata, proves the provider is
//! alive, and its round trip is the RTT the results are sorted by. A withdrawn ad or a
//! stopped node therefore drops out at once, even while its DHT record lingers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lattice_crdt::codec;
use lattice_overlay::{Addr as Multiaddr, Overlay, PeerId, Protocol, Responder};

use crate::store::{ServiceAd, Store};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

/// Services one node advertises at once.
const MAX_ADS: usize = 256;
/// Metadata entries per service, and their sizes.
const MAX_META: usize = 32;
const MAX_META_KEY: usize = 64;
const MAX_META_VALUE: usize = 256;
/// Providers asked per `find`, and how long each may take.
const MAX_ASKED: usize = 32;
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("invalid service name {0:?}: 1 to 128 characters of a-z, 0-9, '.', '-', '_'")]
    BadName(String),
    #[error("invalid metadata: {0}")]
    BadMeta(String),
    #[error("this node already advertises {MAX_ADS} services")]
    TooMany,
    #[error("this node does not advertise {0:?}")]
    NotAdvertised(String),
    #[error("network: {0}")]
    Network(#[from] lattice_overlay::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// The question on `/lattice/service/1`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Ask {
    pub(crate) name: String,
}

/// The answer: whether the service is offered, and its metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Offer {
    pub(crate) offered: bool,
    pub(crate) meta: BTreeMap<String, String>,
}

/// One provider of a service that confirmed it when asked.
#[derive(Clone, Debug)]
pub struct Provider {
    pub peer: PeerId,
    /// Where the provider listens (this node's own listen addresses for itself).
    pub addrs: Vec<Multiaddr>,
    /// Round trip of the metadata request; zero for this node.
    pub rtt: Duration,
    pub meta: BTreeMap<String, String>,
}

/// The DHT key of a service name.
fn check_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::BadName(name.to_owned()))
    }
}

fn check_meta(meta: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if meta.len() > MAX_META {
        return Err(ServiceError::BadMeta(format!("at most {MAX_META} entries")));
    }
    for (k, v) in meta {
        if k.is_empty() || k.len() > MAX_META_KEY || v.len() > MAX_META_VALUE {
            return Err(ServiceError::BadMeta(format!(
                "keys are 1 to {MAX_META_KEY} bytes, values at most {MAX_META_VALUE} ({k:?})"
            )));
        }
    }
    Ok(())
}

/// The services this node advertises (kept in the store across restarts), and lookups of
/// others'.
#[derive(Clone)]
pub struct Services {
    overlay: Overlay,
    store: Store,
    ads: Arc<Mutex<HashMap<String, BTreeMap<String, String>>>>,
}

impl Services {
    /// The services advertised before the last stop, advertised again.
    pub async fn open(overlay: Overlay, store: Store) -> Result<Self, ServiceError> {
        let s = Services {
            overlay,
            store,
            ads: Arc::new(Mutex::new(HashMap::new())),
        };
        for ad in s.store.services().await? {
            s.ads().insert(ad.name.clone(), ad.meta);
            // The record is published again by the DHT's own schedule if this fails now
            // (no peer yet), and the service answers asks meanwhile.
            if let Err(e) = s.overlay.provide(crate::dht_keys::service(&ad.name)).await {
                debug!(service = %ad.name, "cannot announce the service yet: {e}");
            }
            info!(service = %ad.name, "advertising again");
        }
        Ok(s)
    }

    fn ads(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, String>>> {
        crate::lock(&self.ads)
    }

    /// Advertises (or re-advertises with new metadata) until withdrawn or the node stops.
    pub async fn advertise(
        &self,
        name: &str,
        meta: BTreeMap<String, String>,
    ) -> Result<(), ServiceError> {
        check_name(name)?;
        check_meta(&meta)?;
        {
            let ads = self.ads();
            if ads.len() >= MAX_ADS && !ads.contains_key(name) {
                return Err(ServiceError::TooMany);
            }
        }
        // Listed only once its record is out and it is on disk: an ad whose record
        // failed is not shown as advertised.
        self.overlay.provide(crate::dht_keys::service(name)).await?;
        let ad = ServiceAd {
            name: name.to_owned(),
            meta,
        };
        if let Err(e) = self.store.put_service(ad.clone()).await {
            let _ = self.overlay.unprovide(crate::dht_keys::service(name));
            return Err(e.into());
        }
        self.ads().insert(ad.name, ad.meta);
        info!(service = name, "advertising");
        Ok(())
    }

    pub async fn withdraw(&self, name: &str) -> Result<(), ServiceError> {
        if !self.ads().contains_key(name) {
            return Err(ServiceError::NotAdvertised(name.to_owned()));
        }
        self.store.del_service(name.to_owned()).await?;
        self.ads().remove(name);
        self.overlay.unprovide(crate::dht_keys::service(name))?;
        info!(service = name, "withdrawn");
        Ok(())
    }

    /// Names this node advertises, with their metadata.
    pub fn advertised(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.ads()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Live providers of `name`, closest first.
    pub async fn find(&self, name: &str) -> Result<Vec<Provider>, ServiceError> {
        check_name(name)?;
        let me = self.overlay.peer_id();
        let found = crate::dht_keys::providers(&self.overlay, crate::dht_keys::service(name))
            .await
            .unwrap_or_default();
        let mut found: Vec<PeerId> = found.into_iter().filter(|p| *p != me).collect();
        // Providers whose requests keep failing (an open circuit breaker) are asked last.
        found.sort_by_key(|p| self.overlay.failing(p));
        let asks = found
            .into_iter()
            .take(MAX_ASKED)
            .map(|peer| self.ask(peer, name));
        let mut out: Vec<Provider> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if let Some(meta) = self.ads().get(name) {
            out.push(Provider {
                peer: me,
                addrs: Vec::new(),
                rtt: Duration::ZERO,
                meta: meta.clone(),
            });
        }
        out.sort_by_key(|p| p.rtt);
        if !out.is_empty() {
            let mut addrs: HashMap<PeerId, Vec<Multiaddr>> = self
                .overlay
                .peers()
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.peer, p.addrs))
                .collect();
            let info = self.overlay.info().await.ok();
            for p in &mut out {
                p.addrs = if p.peer == me {
                    info.as_ref()
                        .map(|i| i.listen_addrs.clone())
                        .unwrap_or_default()
                } else {
                    addrs.remove(&p.peer).unwrap_or_default()
                };
            }
        }
        Ok(out)
    }

    async fn ask(&self, peer: PeerId, name: &str) -> Option<Provider> {
        let attempt = async {
            self.overlay.dial_peer(peer).await.ok()?;
            let started = Instant::now();
            let ask = codec::encode(&Ask {
                name: name.to_owned(),
            });
            let bytes = self
                .overlay
                .request(peer, Protocol::Service, ask)
                .await
                .ok()?;
            let rtt = started.elapsed();
            let offer: Offer = codec::decode(&bytes, 64 << 10).ok()?;
            offer.offered.then(|| Provider {
                peer,
                addrs: Vec::new(),
                rtt,
                meta: offer.meta,
            })
        };
        let r = tokio::time::timeout(ASK_TIMEOUT, attempt)
            .await
            .ok()
            .flatten();
        if r.is_none() {
            debug!(%peer, service = name, "provider did not confirm the service");
        }
        r
    }

    /// Answers a `/lattice/service/1` request.
    pub fn serve(&self, peer: PeerId, data: &[u8], responder: Responder) {
        let offer = match codec::decode::<Ask>(data, 4 << 10) {
            Ok(ask) => match self.ads().get(&ask.name) {
                Some(meta) => Offer {
                    offered: true,
                    meta: meta.clone(),
                },
                None => Offer {
                    offered: false,
                    meta: BTreeMap::new(),
                },
            },
            Err(e) => {
                debug!(%peer, "malformed service request: {e}");
                let _ = self.overlay.strike(peer);
                Offer {
                    offered: false,
                    meta: BTreeMap::new(),
                }
            }
        };
        let _ = self.overlay.respond(responder, codec::encode(&offer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_metadata_are_checked() {
        assert!(check_name("sensor.temperature").is_ok());
        assert!(check_name("gpu-render_2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("Upper").is_err());
        assert!(check_name(&"x".repeat(129)).is_err());
        let mut meta = BTreeMap::new();
        meta.insert("unit".to_owned(), "celsius".to_owned());
        assert!(check_meta(&meta).is_ok());
        meta.insert(String::new(), "x".to_owned());
        assert!(check_meta(&meta).is_err());
    }
}
