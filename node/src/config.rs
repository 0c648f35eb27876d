//! Node configuration: defaults, then `<config dir>/config.toml`, then flags.
//! Also where the data directory and the control socket are found.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The overlay types a configuration is made of, for callers that build one.
pub use lattice_overlay::{Addr, ConnectionTarget, DhtMode, Reachability, RelayLimits};
use serde::Deserialize;

/// The platform allows this many bytes in a Unix socket path (108 with the terminating
/// NUL on Linux; less on some systems).
pub const MAX_SOCKET_PATH: usize = 100;

/// A configuration problem, said so that the user can fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("invalid size {0:?}: use bytes or a number with K, M, G or T (e.g. 10G)")]
    BadSize(String),
    #[error("invalid duration {0:?}: use a whole number with s, m, h or d (e.g. 30d)")]
    BadDuration(String),
    #[error("no data directory: set --data-dir or LATTICE_HOME (no home directory found)")]
    NoDataDir,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("socket path {path} is {len} bytes; the limit is {MAX_SOCKET_PATH} (use --socket with a shorter path)")]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("invalid pre-shared key in {path}: {message}")]
    Psk { path: PathBuf, message: String },
}

/// How the daemon writes its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            o => Err(format!("unknown log format {o:?}: expected text or json")),
        }
    }
}

/// A set of defaults, which the config file and flags override one by one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// For laptops and servers.
    #[default]
    Default,
    /// For small devices (a Raspberry Pi, a sensor gateway): a DHT client that serves no
    /// relay, 8 to 16 peers kept connected, smaller caches and budgets, and a 1 GiB blob
    /// quota.
    Small,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(Profile::Default),
            "small" => Ok(Profile::Small),
            o => Err(format!("unknown profile {o:?}: expected default or small")),
        }
    }
}

impl Profile {
    pub fn dht_mode(self) -> DhtMode {
        match self {
            // Answering DHT queries for strangers costs memory and bandwidth.
            Profile::Small => DhtMode::Client,
            Profile::Default => DhtMode::Server,
        }
    }

    pub fn relay_service(self) -> bool {
        self == Profile::Default
    }

    pub fn connection_target(self) -> ConnectionTarget {
        match self {
            Profile::Small => ConnectionTarget {
                low: 8,
                high: 16,
                ..ConnectionTarget::default()
            },
            Profile::Default => ConnectionTarget::default(),
        }
    }

    pub fn blob_quota(self) -> Option<u64> {
        match self {
            Profile::Small => Some(1 << 30),
            Profile::Default => None,
        }
    }

    /// Bytes of the database kept in memory.
    pub fn store_cache(self) -> usize {
        match self {
            Profile::Small => 4 << 20,
            Profile::Default => crate::store::DEFAULT_CACHE,
        }
    }
}

/// `config.toml`: every field optional; flags override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<Vec<Addr>>,
    /// The port for listen addresses that leave it 0 (see [`crate::ports`]).
    pub port: Option<u16>,
    pub bootstrap: Option<Vec<Addr>>,
    pub mdns: Option<bool>,
    pub upnp: Option<bool>,
    pub dht_mode: Option<String>,
    pub metrics: Option<SocketAddr>,
    /// Serve the status page on this address (see [`crate::http`]).
    pub http: Option<SocketAddr>,
    /// Allow the status page on an address other than loopback.
    pub http_allow_remote: Option<bool>,
    pub psk_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// e.g. "10G": unpinned fetched blobs are collected beyond this.
    pub blob_quota: Option<String>,
    /// Serve as a relay for peers that cannot be reached (default true).
    pub relay_service: Option<bool>,
    /// `auto` (AutoNAT decides), `public` or `private`.
    pub reachability: Option<String>,
    /// The relay service's limits.
    pub relay: Option<RelayFile>,
    /// `default` or `small`: the defaults everything else here overrides.
    pub profile: Option<String>,
    /// Peers kept connected when idle.
    pub connections: Option<ConnectionsFile>,
    /// e.g. "16M": bytes of the database kept in memory.
    pub store_cache: Option<String>,
    /// e.g. "30d", "12h", "90s": a replica of a document unheard of for this long stops
    /// holding back the compaction of its history (see docs/storage.md).
    pub compaction_horizon: Option<String>,
}

/// `[connections]` in `config.toml`: past `high` connected peers, idle ones are
/// disconnected down to `low` (peers the node needs stay; see docs/operations.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsFile {
    pub low: Option<usize>,
    pub high: Option<usize>,
}

impl ConnectionsFile {
    /// The target this section sets over `base`, checked.
    pub fn target(&self, base: ConnectionTarget) -> Result<ConnectionTarget, String> {
        ConnectionTarget::new(
            self.low
                .unwrap_or(base.low.min(self.high.unwrap_or(usize::MAX))),
            self.high.unwrap_or(base.high.max(self.low.unwrap_or(0))),
        )
    }
}

/// `[relay]` in `config.toml`: what this node gives as a relay. Unset fields keep their
/// defaults (see [`lattice_overlay::RelayLimits`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    pub max_reservations: Option<usize>,
    pub max_reservations_per_peer: Option<usize>,
    pub reservation_duration_secs: Option<u64>,
    pub max_circuits: Option<usize>,
    pub max_circuits_per_peer: Option<usize>,
    pub max_circuit_duration_secs: Option<u64>,
    /// e.g. "64M".
    pub max_circuit_bytes: Option<String>,
}

impl RelayFile {
    /// The limits this section sets, over the defaults.
    pub fn limits(&self) -> Result<RelayLimits, ConfigError> {
        let d = RelayLimits::default();
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        Ok(RelayLimits {
            max_reservations: self.max_reservations.unwrap_or(d.max_reservations),
            max_reservations_per_peer: self
                .max_reservations_per_peer
                .unwrap_or(d.max_reservations_per_peer),
            reservation_duration: secs(self.reservation_duration_secs, d.reservation_duration),
            max_circuits: self.max_circuits.unwrap_or(d.max_circuits),
            max_circuits_per_peer: self
                .max_circuits_per_peer
                .unwrap_or(d.max_circuits_per_peer),
            max_circuit_duration: secs(self.max_circuit_duration_secs, d.max_circuit_duration),
            max_circuit_bytes: match &self.max_circuit_bytes {
                Some(s) => parse_size(s)?,
                None => d.max_circuit_bytes,
            },
        })
    }
}

impl FileConfig {
    /// Reads the file if it exists.
    pub fn load(path: &Path) -> Result<Option<FileConfig>, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| ConfigError::Parse {
                path: path.into(),
                message: e.to_string(),
            })
    }
}

/// Everything the daemon needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub listen: Vec<Addr>,
    /// The port for listen addresses that leave it 0, kept for later starts; without it
    /// the port kept from an earlier start, or a new one (see [`crate::ports`]).
    pub port: Option<u16>,
    pub bootstrap: Vec<Addr>,
    pub mdns: bool,
    pub upnp: bool,
    pub dht_mode: DhtMode,
    /// Serve as a relay for unreachable peers, within `relay_limits`.
    pub relay_service: bool,
    pub relay_limits: RelayLimits,
    pub reachability: Reachability,
    pub metrics: Option<SocketAddr>,
    /// The status page's address (off when `None`); loopback only unless
    /// `http_allow_remote`.
    pub http: Option<SocketAddr>,
    pub http_allow_remote: bool,
    pub psk_file: Option<PathBuf>,
    /// Bytes of blobs kept before unpinned fetched ones are collected, oldest first.
    pub blob_quota: Option<u64>,
    /// The preset the rest was resolved from; it also sets what has no knob of its own
    /// (the overlay's budgets for peers' input, the connection limit).
    pub profile: Profile,
    pub connection_target: ConnectionTarget,
    /// Bytes of the database kept in memory.
    pub store_cache: usize,
    /// How long SIGTERM waits for in-flight control requests before exiting anyway.
    pub shutdown_grace: Duration,
    /// A document replica unheard of for this long stops holding compaction back.
    pub compaction_horizon: Duration,
}

/// The default [`Config::compaction_horizon`]: 30 days.
pub const COMPACTION_HORIZON: Duration = Duration::from_secs(30 * 24 * 3_600);

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "lattice")
}

/// The data directory: `flag`, else `LATTICE_HOME`, else the platform's data directory.
pub fn data_dir(flag: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(d) = flag {
        return Ok(d.into());
    }
    if let Some(d) = std::env::var_os("LATTICE_HOME").filter(|d| !d.is_empty()) {
        return Ok(d.into());
    }
    project_dirs()
        .map(|p| p.data_dir().to_path_buf())
        .ok_or(ConfigError::NoDataDir)
}

/// Where `config.toml` lives.
pub fn config_file() -> Option<PathBuf> {
    project_dirs().map(|p| p.config_dir().join("config.toml"))
}

/// The control socket: `flag` (or `LATTICE_SOCKET`, which clap folds into the flag), else
/// `$XDG_RUNTIME_DIR/lattice/lattice.sock`, else `<data>/lattice.sock`.
pub fn socket_path(flag: Option<&Path>, data_dir: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let path = match flag {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            Some(run) => PathBuf::from(run).join("lattice").join("lattice.sock"),
            None => self::data_dir(data_dir)?.join("lattice.sock"),
        },
    };
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(ConfigError::SocketPathTooLong { path, len });
    }
    Ok(path)
}

/// Reads a pre-shared key file (the `/key/swarm/psk/1.0.0/` format: three lines, the key
/// in base16 on the last).
pub fn read_psk(path: &Path) -> Result<lattice_overlay::PreSharedKey, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    text.trim()
        .parse()
        .map_err(|e: lattice_overlay::KeyParseError| ConfigError::Psk {
            path: path.into(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_socket_paths_are_refused_naming_the_limit() {
        let long = PathBuf::from(format!("/tmp/{}/lattice.sock", "x".repeat(120)));
        let err = socket_path(Some(&long), None).unwrap_err();
        assert!(err.to_string().contains("limit is 100"), "{err}");
    }

    #[test]
    fn config_files_are_parsed_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        assert!(FileConfig::load(&p).unwrap().is_none());
        std::fs::write(
            &p,
            "mdns = false\nbootstrap = [\"/ip4/127.0.0.1/tcp/4001\"]\n",
        )
        .unwrap();
        let c = FileConfig::load(&p).unwrap().unwrap();
        assert_eq!(c.mdns, Some(false));
        assert_eq!(c.bootstrap.unwrap().len(), 1);
        std::fs::write(&p, "mdsn = false\n").unwrap();
        assert!(FileConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("mdsn"));
    }

    #[test]
    fn profiles_and_connection_targets_parse_and_are_checked() {
        assert_eq!("small".parse::<Profile>().unwrap(), Profile::Small);
        assert!("tiny".parse::<Profile>().unwrap_err().contains("small"));
        let base = Profile::Default.connection_target();
        let only_high = ConnectionsFile {
            low: None,
            high: Some(10),
        };
        // A `high` under the default `low` pulls `low` down with it.
        let t = only_high.target(base).unwrap();
        assert_eq!((t.low, t.high), (10, 10));
        let only_low = ConnectionsFile {
            low: Some(100),
            high: None,
        };
        let t = only_low.target(base).unwrap();
        assert_eq!((t.low, t.high), (100, 100));
        let upside_down = ConnectionsFile {
            low: Some(9),
            high: Some(3),
        };
        assert!(upside_down.target(base).is_err());
        let zero = ConnectionsFile {
            low: Some(0),
            high: Some(0),
        };
        assert!(zero.target(base).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            "profile = \"small\"\nstore_cache = \"8M\"\n[connections]\nlow = 4\nhigh = 12\n",
        )
        .unwrap();
        let c = FileConfig::load(&p).unwrap().unwrap();
        assert_eq!(c.profile.as_deref(), Some("small"));
        let t = c.connections.unwrap().target(base).unwrap();
        assert_eq!((t.low, t.high), (4, 12));
    }

    #[test]
    fn psk_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("swarm.key");
        std::fs::write(
            &p,
            format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "ab".repeat(32)),
        )
        .unwrap();
        assert!(read_psk(&p).is_ok());
        std::fs::write(&p, "nonsense").unwrap();
        assert!(read_psk(&p).is_err());
    }
}

/// Parses a duration such as `30d`, `12h`, `15m`, `90s` or `90` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((t, ""), |i| t.split_at(i));
    let secs: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(ConfigError::BadDuration(text.to_owned())),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| ConfigError::BadDuration(text.to_owned()))?;
    n.checked_mul(secs)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| ConfigError::BadDuration(text.to_owned()))
}

/// Parses a size such as `512M`, `10G`, `1.5T` or `4096` (bytes; powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((t, ""), |i| t.split_at(i));
    let mult: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(ConfigError::BadSize(text.to_owned())),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| ConfigError::BadSize(text.to_owned()))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(ConfigError::BadSize(text.to_owned()));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(super::parse_size("4096").unwrap(), 4096);
        assert_eq!(super::parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(super::parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(super::parse_size("2GiB").unwrap(), 2 << 30);
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("-1G").is_err());
    }
}
