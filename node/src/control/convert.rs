//! The one place domain answers become wire types: ids and addresses as text, durations
//! in milliseconds, hashes in hex. Handlers just call `.into()`.

use lattice_crdt::sync::Standing;
use lattice_crdt::ActorId;

use super::api;
use super::strings;
use crate::auth::peer_of_actor;
use crate::{blobs, docs, services, topics};

/// An author as the API shows it: its peer id (every Lattice author is an Ed25519 peer).
fn peer_string(actor: &ActorId) -> String {
    peer_of_actor(actor).map_or_else(|| actor.to_string(), |p| p.to_string())
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

impl From<&lattice_overlay::PeerInfo> for api::Peer {
    fn from(p: &lattice_overlay::PeerInfo) -> Self {
        api::Peer {
            peer_id: p.peer.to_string(),
            addrs: strings(&p.addrs),
            rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1e3),
            connected: p.connected,
            relayed: p.relayed,
            in_dht: p.in_dht,
            breaker: p.breaker.name().to_owned(),
            breaker_retry_s: match p.breaker {
                lattice_overlay::breaker::State::Open { remaining } => {
                    Some(remaining.as_secs_f64())
                }
                _ => None,
            },
        }
    }
}

impl From<&lattice_overlay::Observed> for api::NatMapping {
    fn from(o: &lattice_overlay::Observed) -> Self {
        use lattice_overlay::Mapping;
        let (behaviour, port_preserving) = match o.mapping {
            Mapping::Unknown => ("unknown", false),
            Mapping::None => ("none", false),
            Mapping::EndpointIndependent { port_preserving } => {
                ("endpoint-independent", port_preserving)
            }
            Mapping::Dependent => ("symmetric", false),
        };
        api::NatMapping {
            transport: o.transport.to_owned(),
            behaviour: behaviour.to_owned(),
            port_preserving,
            observers: o.observers,
            seen: o.seen.clone(),
        }
    }
}

impl From<&docs::ClockOffset> for api::ClockOffset {
    fn from(o: &docs::ClockOffset) -> Self {
        api::ClockOffset {
            peer_id: peer_string(&o.author),
            offset_ms: o.offset_ms,
            age_s: crate::now_ms().saturating_sub(o.seen_ms) / 1_000,
            refused: o.refused,
        }
    }
}

impl From<docs::DocSummary> for api::DocInfo {
    fn from(d: docs::DocSummary) -> Self {
        api::DocInfo {
            doc: d.id.to_string(),
            name: d.name,
            open: d.open,
            owner: peer_string(&d.owner),
            digest: hex(&d.digest),
            keys: d.keys,
            deltas: d.deltas,
            replicas: d.replicas,
            lag: d.lag.map(|l| api::Lag {
                last_ms: l.last_ms,
                p50_ms: l.p50_ms,
                max_ms: l.max_ms,
                samples: l.samples,
            }),
            behind: d.behind,
            log_bytes: d.log_bytes,
            state_bytes: d.state_bytes,
        }
    }
}

impl From<docs::DocCut> for api::DocCut {
    fn from(c: docs::DocCut) -> Self {
        let by_peer =
            |vv: &[(ActorId, u64)]| vv.iter().map(|(a, n)| (peer_string(a), *n)).collect();
        api::DocCut {
            doc: c.id.to_string(),
            peer_id: peer_string(&c.me),
            at_ms: c.at_ms,
            cut: by_peer(&c.cut),
            held: by_peer(&c.held),
            digest: hex(&c.digest),
            straddled: c.straddled,
        }
    }
}

impl From<docs::Written> for api::Written {
    fn from(w: docs::Written) -> Self {
        api::Written {
            doc: w.doc.to_string(),
            seq: w.seq,
            trace: w.trace,
        }
    }
}

impl From<docs::WriterList> for api::Writers {
    fn from(w: docs::WriterList) -> Self {
        api::Writers {
            doc: w.doc.to_string(),
            open: w.open,
            owner: peer_string(&w.owner),
            writers: w
                .writers
                .iter()
                .map(|(actor, standing)| {
                    let (state, cut) = match standing {
                        Standing::Writer => (api::WriterState::Writer, None),
                        Standing::Removed { cut } => (api::WriterState::Removed, Some(*cut)),
                    };
                    api::Writer {
                        peer_id: peer_string(actor),
                        state,
                        cut,
                    }
                })
                .collect(),
        }
    }
}

impl From<docs::Changed> for api::WatchEvent {
    fn from(c: docs::Changed) -> Self {
        api::WatchEvent {
            doc: c.doc.to_string(),
            local: c.local,
            authors: c.authors.iter().map(peer_string).collect(),
            changes: c.changes,
        }
    }
}

impl From<blobs::BlobInfo> for api::BlobInfo {
    fn from(b: blobs::BlobInfo) -> Self {
        api::BlobInfo {
            hash: hex(&b.hash),
            cid: blobs::cid::cid(&b.hash),
            size: b.size,
            complete: b.complete,
            pinned: b.pinned,
            local: b.local,
            have: b.have,
        }
    }
}

impl From<blobs::Progress> for api::FetchEvent {
    fn from(p: blobs::Progress) -> Self {
        match p {
            blobs::Progress::Progress {
                have,
                size,
                providers,
            } => api::FetchEvent::Progress {
                have,
                size,
                providers,
            },
            blobs::Progress::Done {
                blob,
                path,
                received,
                retried,
                bad_providers,
                trace,
            } => api::FetchEvent::Done {
                blob: blob.into(),
                path: path.map(|p| p.display().to_string()),
                received,
                retried,
                bad_providers: strings(&bad_providers),
                trace: crate::trace::show(trace),
            },
            blobs::Progress::Failed { message, trace } => api::FetchEvent::Failed {
                message,
                trace: crate::trace::show(trace),
            },
        }
    }
}

impl From<services::Provider> for api::Provider {
    fn from(p: services::Provider) -> Self {
        api::Provider {
            peer_id: p.peer.to_string(),
            addrs: strings(&p.addrs),
            rtt_ms: p.rtt.as_secs_f64() * 1e3,
            meta: p.meta,
        }
    }
}

impl From<topics::TopicMessage> for api::TopicMessage {
    fn from(m: topics::TopicMessage) -> Self {
        api::TopicMessage {
            topic: m.topic,
            from: m.from.map(|p| p.to_string()),
            data: String::from_utf8_lossy(&m.data).into_owned(),
        }
    }
}
