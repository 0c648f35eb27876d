//! `id`, `status`, `peers`, `dial` and `net.*`.

use std::str::FromStr;

use lattice_overlay::{Addr, Nat, PeerId};

use super::{answer, misrouted, Handlers};
use crate::control::api::{self, method, ApiError, Command, ErrorCode};
use crate::control::server::Answer;
use crate::control::strings;

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, e.to_string())
}

fn peer_ids(list: Vec<String>) -> Result<Vec<PeerId>, ApiError> {
    if list.is_empty() {
        return Err(bad_request("no peers given"));
    }
    crate::control::check_peer_list(&list)?;
    list.iter()
        .map(|p| crate::control::parse_peer_id(p).map_err(bad_request))
        .collect()
}

pub(super) async fn call(h: &Handlers, command: Command) -> Result<Answer, ApiError> {
    match command {
        Command::Id(_) => {
            let info = h.overlay.info().await?;
            answer::<method::Id>(api::IdInfo {
                peer_id: info.peer_id.to_string(),
                listen_addrs: strings(&info.listen_addrs),
            })
        }
        Command::Status(_) => {
            let info = h.overlay.info().await?;
            answer::<method::Status>(api::Status {
                peer_id: info.peer_id.to_string(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                peers: info.connected_peers,
                dht_peers: info.dht_peers,
                connection_target: Some(api::ConnectionTarget {
                    low: info.target.low,
                    high: info.target.high,
                }),
                trimmed_peers: info.trimmed,
                docs: h.docs.count().await?,
                blobs: h.blobs.count(),
                uptime_s: h.started.elapsed().as_secs(),
                listen_addrs: strings(&info.listen_addrs),
                external_addrs: strings(&info.external_addrs),
                data_dir: h.data_dir.display().to_string(),
                blocked: strings(&info.blocked),
                allow_only: info.allow_only.as_deref().map(strings),
                reachability: match &info.nat {
                    Nat::Unknown => "unknown",
                    Nat::Public(_) => "public",
                    Nat::Private => "private",
                }
                .to_owned(),
                reachable_at: match &info.nat {
                    Nat::Public(Some(a)) => Some(a.to_string()),
                    _ => None,
                },
                relay_service: info.relay_service,
                relayed_addrs: strings(&info.relayed_addrs),
                upnp: info.upnp.clone(),
                nat_mapping: info.mapping.iter().map(api::NatMapping::from).collect(),
                clock_offsets: h
                    .docs
                    .clock_offsets()
                    .await?
                    .iter()
                    .map(api::ClockOffset::from)
                    .collect(),
                status_page: h.status_page.clone(),
            })
        }
        Command::Peers(_) => {
            let peers = h.overlay.peers().await?;
            answer::<method::Peers>(peers.iter().map(api::Peer::from).collect())
        }
        Command::Dial(a) => {
            if a.addr.len() > crate::control::MAX_ADDR {
                return Err(bad_request(format!(
                    "invalid multiaddr: {} characters, at most {} are accepted",
                    a.addr.len(),
                    crate::control::MAX_ADDR
                )));
            }
            let addr = Addr::from_str(&a.addr)
                .map_err(|e| bad_request(format!("invalid multiaddr {:?}: {e}", a.addr)))?;
            let peer = h.overlay.dial(addr).await?;
            answer::<method::Dial>(api::Dialed {
                peer_id: peer.to_string(),
            })
        }
        Command::NetBlock(a) => {
            h.overlay.block(peer_ids(a.peers)?).await?;
            answer::<method::NetBlock>(api::Done {})
        }
        Command::NetUnblock(a) => {
            h.overlay.unblock(peer_ids(a.peers)?).await?;
            answer::<method::NetUnblock>(api::Done {})
        }
        Command::NetAllowOnly(a) => {
            h.overlay.allow_only(peer_ids(a.peers)?).await?;
            answer::<method::NetAllowOnly>(api::Done {})
        }
        Command::NetAllowAll(_) => {
            h.overlay.allow_all().await?;
            answer::<method::NetAllowAll>(api::Done {})
        }
        other => Err(misrouted(&other)),
    }
}
