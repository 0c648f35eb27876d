//! How this node's NAT maps its port, told from what peers see. Identify reports the
//! address each peer sees a connection come from. This node dials from its listening port
//! (QUIC always, TCP by port reuse), so several peers seeing one address means the NAT
//! keeps one mapping for all destinations (endpoint-independent, hole punching works);
//! different ports for different peers mean a new mapping per destination (symmetric,
//! hole punching fails and relays carry the connections).

use std::collections::VecDeque;
use std::net::IpAddr;

use libp2p::multiaddr::Protocol as AddrPart;
use libp2p::{Multiaddr, PeerId};

/// Observers remembered per transport; the oldest go first.
const MAX_OBSERVERS: usize = 16;

/// What the NAT does to this node's port on one transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Fewer than two peers reported an address (or none yet).
    Unknown,
    /// Peers see the address this node listens on: no NAT on the way.
    None,
    /// Every peer sees the same address: hole punching can work. `port_preserving` when
    /// the NAT kept the listening port.
    EndpointIndependent { port_preserving: bool },
    /// Different peers see different ports: a symmetric NAT.
    Dependent,
}

/// What peers see of one transport (`tcp` or `udp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub transport: &'static str,
    pub mapping: Mapping,
    /// Peers whose reports this is built on.
    pub observers: usize,
    /// The distinct addresses they saw, as `IP:PORT`.
    pub seen: Vec<String>,
}

#[derive(Default)]
pub(super) struct Observations {
    tcp: VecDeque<(PeerId, IpAddr, u16)>,
    udp: VecDeque<(PeerId, IpAddr, u16)>,
}

/// The IP and port of a plain TCP or QUIC address; `None` for relayed and other addresses.
fn ip_port(addr: &Multiaddr) -> Option<(&'static str, IpAddr, u16)> {
    let mut ip = None;
    for part in addr.iter() {
        match part {
            AddrPart::Ip4(a) => ip = Some(IpAddr::V4(a)),
            AddrPart::Ip6(a) => ip = Some(IpAddr::V6(a)),
            AddrPart::Tcp(port) => return ip.map(|ip| ("tcp", ip, port)),
            AddrPart::Udp(port) => return ip.map(|ip| ("udp", ip, port)),
            _ => return None,
        }
    }
    None
}

impl Observations {
    /// `peer` saw a direct connection of this node come from `observed`.
    pub(super) fn record(&mut self, peer: PeerId, observed: &Multiaddr) {
        if observed.iter().any(|p| matches!(p, AddrPart::P2pCircuit)) {
            return;
        }
        let Some((transport, ip, port)) = ip_port(observed) else {
            return;
        };
        let list = if transport == "tcp" {
            &mut self.tcp
        } else {
            &mut self.udp
        };
        list.retain(|(p, _, _)| *p != peer);
        if list.len() >= MAX_OBSERVERS {
            list.pop_front();
        }
        list.push_back((peer, ip, port));
    }

    /// A verdict per transport, given the addresses this node listens on.
    pub(super) fn verdicts(&self, listening: &[Multiaddr]) -> Vec<Observed> {
        let listen: Vec<_> = listening.iter().filter_map(ip_port).collect();
        [("tcp", &self.tcp), ("udp", &self.udp)]
            .into_iter()
            .map(|(transport, list)| {
                let mut seen: Vec<(IpAddr, u16)> = Vec::new();
                for (_, ip, port) in list {
                    if !seen.contains(&(*ip, *port)) {
                        seen.push((*ip, *port));
                    }
                }
                // The swarm lists the interfaces' own addresses, never 0.0.0.0.
                let ours = |(ip, port): &(IpAddr, u16)| {
                    listen
                        .iter()
                        .any(|(t, lip, lport)| *t == transport && lport == port && lip == ip)
                };
                let port_kept = |(_, port): &(IpAddr, u16)| {
                    listen
                        .iter()
                        .any(|(t, _, lport)| *t == transport && lport == port)
                };
                let mapping = if !seen.is_empty() && seen.iter().all(ours) {
                    Mapping::None
                } else if list.len() < 2 {
                    Mapping::Unknown
                } else if seen.len() == 1 {
                    Mapping::EndpointIndependent {
                        port_preserving: port_kept(&seen[0]),
                    }
                } else {
                    Mapping::Dependent
                };
                Observed {
                    transport,
                    mapping,
                    observers: list.len(),
                    seen: seen
                        .iter()
                        .map(|(ip, port)| std::net::SocketAddr::new(*ip, *port).to_string())
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn udp(o: &Observations) -> Observed {
        let listening = [
            addr("/ip4/0.0.0.0/tcp/4001"),
            addr("/ip4/0.0.0.0/udp/4001/quic-v1"),
        ];
        o.verdicts(&listening).remove(1)
    }

    #[test]
    fn one_observer_cannot_tell_a_cone_from_a_symmetric_nat() {
        let mut o = Observations::default();
        assert_eq!(udp(&o).mapping, Mapping::Unknown);
        o.record(PeerId::random(), &addr("/ip4/203.0.113.7/udp/4001/quic-v1"));
        assert_eq!(udp(&o).mapping, Mapping::Unknown);
        assert_eq!(udp(&o).seen, vec!["203.0.113.7:4001"]);
    }

    #[test]
    fn one_address_seen_by_many_is_a_cone_and_many_ports_a_symmetric_nat() {
        let mut o = Observations::default();
        let a = PeerId::random();
        o.record(a, &addr("/ip4/203.0.113.7/udp/4001/quic-v1"));
        o.record(PeerId::random(), &addr("/ip4/203.0.113.7/udp/4001/quic-v1"));
        assert_eq!(
            udp(&o).mapping,
            Mapping::EndpointIndependent {
                port_preserving: true
            }
        );
        // The same peer reporting again replaces its report.
        o.record(a, &addr("/ip4/203.0.113.7/udp/4001/quic-v1"));
        assert_eq!(udp(&o).observers, 2);
        o.record(
            PeerId::random(),
            &addr("/ip4/203.0.113.7/udp/61000/quic-v1"),
        );
        assert_eq!(udp(&o).mapping, Mapping::Dependent);
        // TCP was never observed.
        let tcp = o.verdicts(&[addr("/ip4/0.0.0.0/tcp/4001")]).remove(0);
        assert_eq!((tcp.transport, tcp.mapping), ("tcp", Mapping::Unknown));
    }

    #[test]
    fn a_remapped_port_is_not_port_preserving() {
        let mut o = Observations::default();
        for _ in 0..3 {
            o.record(PeerId::random(), &addr("/ip4/203.0.113.7/udp/5555/quic-v1"));
        }
        assert_eq!(
            udp(&o).mapping,
            Mapping::EndpointIndependent {
                port_preserving: false
            }
        );
    }

    #[test]
    fn the_listening_address_seen_means_no_nat_and_circuits_are_ignored() {
        let mut o = Observations::default();
        let relay = PeerId::random();
        o.record(
            PeerId::random(),
            &addr(&format!(
                "/ip4/198.51.100.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit"
            )),
        );
        assert_eq!(udp(&o).observers, 0);
        let listening = [addr("/ip4/198.51.100.9/udp/4001/quic-v1")];
        o.record(
            PeerId::random(),
            &addr("/ip4/198.51.100.9/udp/4001/quic-v1"),
        );
        assert_eq!(o.verdicts(&listening)[1].mapping, Mapping::None);
    }

    #[test]
    fn observers_are_bounded() {
        let mut o = Observations::default();
        for port in 0..100 {
            o.record(
                PeerId::random(),
                &addr(&format!("/ip4/203.0.113.7/udp/{port}/quic-v1")),
            );
        }
        assert_eq!(udp(&o).observers, MAX_OBSERVERS);
        assert_eq!(udp(&o).seen.len(), MAX_OBSERVERS);
    }
}
