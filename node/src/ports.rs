//! Stable listen ports. A listen address whose port is 0 gets the node's port: chosen with
//! `--port`, or picked at the first start (the same number for TCP and QUIC), and kept in
//! `<data>/listen-port` so that every restart listens where peers last saw the node.
//! Addresses with a port of their own are used as given.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use lattice_overlay::{Addr, AddrPart};
use tracing::{info, warn};

/// The file in the data directory that holds the port.
pub const PORT_FILE: &str = "listen-port";
/// Attempts at finding a port free for TCP and UDP alike.
const PICK_ATTEMPTS: usize = 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    #[error("port {port} is in use ({reason}); stop what holds it or choose another with --port")]
    InUse { port: u16, reason: String },
    #[error("no port free for both TCP and UDP after {PICK_ATTEMPTS} attempts")]
    NoneFree,
}

/// Where a listen address would bind, if its port is 0: the IP and whether it is UDP.
fn unbound(addr: &Addr) -> Option<(IpAddr, bool)> {
    let mut ip = None;
    for part in addr.iter() {
        match part {
            AddrPart::Ip4(a) => ip = Some(IpAddr::V4(a)),
            AddrPart::Ip6(a) => ip = Some(IpAddr::V6(a)),
            AddrPart::Tcp(0) => return Some((ip?, false)),
            AddrPart::Udp(0) => return Some((ip?, true)),
            _ => {}
        }
    }
    None
}

/// `addr` with its port-0 component set to `port`.
fn with_port(addr: &Addr, port: u16) -> Addr {
    addr.iter()
        .map(|part| match part {
            AddrPart::Tcp(0) => AddrPart::Tcp(port),
            AddrPart::Udp(0) => AddrPart::Udp(port),
            other => other,
        })
        .collect()
}

/// Whether every one of `binds` can take `port` now.
fn free(binds: &[(IpAddr, bool)], port: u16) -> Result<(), String> {
    for &(ip, udp) in binds {
        let at = SocketAddr::new(ip, port);
        let bound = if udp {
            UdpSocket::bind(at).map(drop)
        } else {
            TcpListener::bind(at).map(drop)
        };
        bound.map_err(|e| format!("{} {at}: {e}", if udp { "UDP" } else { "TCP" }))?;
    }
    Ok(())
}

/// A port free for every one of `binds`.
fn pick(binds: &[(IpAddr, bool)]) -> Result<u16, PortError> {
    let ip = binds
        .iter()
        .find(|(_, udp)| !udp)
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |(ip, _)| *ip);
    for _ in 0..PICK_ATTEMPTS {
        let port = TcpListener::bind(SocketAddr::new(ip, 0))
            .and_then(|l| l.local_addr())
            .map_err(|_| PortError::NoneFree)?
            .port();
        if free(binds, port).is_ok() {
            return Ok(port);
        }
    }
    Err(PortError::NoneFree)
}

/// The kept port: at most a few bytes from a regular file (not through a symlink).
fn read(path: &Path) -> Option<u16> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        warn!(path = %path.display(), "ignoring a listen-port that is not a regular file");
        return None;
    }
    let mut text = String::new();
    file.take(16).read_to_string(&mut text).ok()?;
    match text.trim().parse::<u16>() {
        Ok(p) if p != 0 => Some(p),
        _ => {
            warn!(path = %path.display(), "ignoring a listen-port file that holds no port");
            None
        }
    }
}

/// Writes the port through a temporary file, so a crash leaves the old one or the new.
fn write(path: &Path, port: u16) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, path)
}

/// The listen addresses to use: those with port 0 get the node's port (see the module
/// docs). `chosen` is `--port`: it must be free, and becomes the kept port (0 picks a new
/// one). A kept port that is taken is replaced by a new one, with a warning: the node
/// keeps working, at a new address.
pub fn stable(
    listen: &[Addr],
    data_dir: &Path,
    chosen: Option<u16>,
) -> Result<Vec<Addr>, PortError> {
    let binds: Vec<(IpAddr, bool)> = listen.iter().filter_map(unbound).collect();
    if binds.is_empty() {
        return Ok(listen.to_vec());
    }
    let file: PathBuf = data_dir.join(PORT_FILE);
    let kept = read(&file);
    let port = match chosen {
        Some(0) => pick(&binds)?,
        Some(port) => {
            free(&binds, port).map_err(|reason| PortError::InUse { port, reason })?;
            port
        }
        None => match kept {
            Some(port) => match free(&binds, port) {
                Ok(()) => port,
                Err(reason) => {
                    let new = pick(&binds)?;
                    warn!(old = port, new, "the kept listen port is in use ({reason}); listening on a new one, which peers learn again");
                    new
                }
            },
            None => {
                let port = pick(&binds)?;
                info!(port, "picked a listen port; it is kept for later starts");
                port
            }
        },
    };
    if kept != Some(port) {
        if let Err(e) = write(&file, port) {
            warn!(path = %file.display(), "cannot keep the listen port ({e}); the next start may pick another");
        }
    }
    Ok(listen.iter().map(|a| with_port(a, port)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Vec<Addr> {
        vec![
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ]
    }

    fn port_of(addrs: &[Addr]) -> Vec<u16> {
        addrs
            .iter()
            .flat_map(|a| a.iter())
            .filter_map(|p| match p {
                AddrPart::Tcp(p) | AddrPart::Udp(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_start_picks_a_port_and_later_starts_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = stable(&loopback(), dir.path(), None).unwrap();
        let ports = port_of(&first);
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0], ports[1], "TCP and QUIC share the number");
        assert_ne!(ports[0], 0);
        let again = stable(&loopback(), dir.path(), None).unwrap();
        assert_eq!(again, first);
        let kept = std::fs::read_to_string(dir.path().join(PORT_FILE)).unwrap();
        assert_eq!(kept.trim(), ports[0].to_string());
    }

    #[test]
    fn a_chosen_port_is_kept_and_a_taken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        let err = stable(&loopback(), dir.path(), Some(taken)).unwrap_err();
        assert!(
            matches!(err, PortError::InUse { port, .. } if port == taken),
            "{err}"
        );
        assert!(err.to_string().contains("--port"), "{err}");
        drop(holder);
        let chosen = stable(&loopback(), dir.path(), Some(taken)).unwrap();
        assert_eq!(port_of(&chosen), vec![taken, taken]);
        assert_eq!(stable(&loopback(), dir.path(), None).unwrap(), chosen);
    }

    #[test]
    fn a_kept_port_that_is_taken_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = port_of(&stable(&loopback(), dir.path(), None).unwrap())[0];
        let holder = TcpListener::bind(("127.0.0.1", first)).unwrap();
        let second = port_of(&stable(&loopback(), dir.path(), None).unwrap())[0];
        assert_ne!(second, first);
        drop(holder);
        assert_eq!(
            port_of(&stable(&loopback(), dir.path(), None).unwrap())[0],
            second
        );
    }

    #[test]
    fn a_kept_port_is_not_read_through_a_symlink_or_from_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(PORT_FILE);
        std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        assert_eq!(read(&file), None);
        std::fs::remove_file(&file).unwrap();
        std::fs::write(dir.path().join("elsewhere"), "4001\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &file).unwrap();
        assert_eq!(read(&file), None);
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, "9".repeat(1 << 20)).unwrap();
        assert_eq!(
            read(&file),
            None,
            "a long file is read no further than a port"
        );
        std::fs::write(&file, "4001\n").unwrap();
        assert_eq!(read(&file), Some(4001));
    }

    #[test]
    fn addresses_with_their_own_port_are_used_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let given: Vec<Addr> = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
        assert_eq!(stable(&given, dir.path(), None).unwrap(), given);
        assert!(!dir.path().join(PORT_FILE).exists());
        std::fs::write(dir.path().join(PORT_FILE), "not a port\n").unwrap();
        let picked = stable(&loopback(), dir.path(), None).unwrap();
        assert_ne!(port_of(&picked)[0], 0);
    }
}
