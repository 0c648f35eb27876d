//! The command line, as clap parses it. The surface follows DESIGN.md's CLI contract.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "lattice",
    version,
    about = "A peer-to-peer overlay node: DHT, shared resources, replicated CRDT documents"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted anywhere on the line.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// The daemon's control socket.
    #[arg(long, global = true, env = "LATTICE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node in the foreground until SIGINT or SIGTERM.
    Daemon(Box<DaemonArgs>),
    /// This node's peer id and listen addresses.
    Id,
    /// A summary of the node.
    Status,
    /// Connected peers (then peers known only from the DHT), with round-trip times.
    Peers,
    /// Connect to a peer: a full multiaddr, or just /p2p/PEER_ID to use addresses the DHT knows.
    Dial {
        #[arg(value_name = "MULTIADDR")]
        addr: String,
    },
    /// The allow/block list.
    #[command(subcommand)]
    Net(NetCommand),
    /// Check this node: reachability, relays, UPnP, connections, permissions, free disk.
    Doctor {
        /// The data directory to check when no daemon answers. Default: as the daemon's.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Replicated documents: create, join, read, write, watch.
    #[command(subcommand)]
    Doc(DocCommand),
    /// Files addressed by their BLAKE3 hash, fetched verified from many providers.
    #[command(subcommand)]
    Blob(BlobCommand),
    /// Named capabilities: advertise yours, find others'.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Publish/subscribe message streams.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Local testnets and the deterministic simulator.
    Testnet(TestnetArgs),
}

#[derive(Args, Debug)]
pub struct TestnetArgs {
    /// The testnet's directory (holds testnet.json, each node's data, socket and log).
    #[arg(long, global = true, env = "LATTICE_TESTNET", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: TestnetCommand,
}

#[derive(Args, Debug, Clone)]
pub struct DaemonArgs {
    /// Data directory (identity, storage). Default: $LATTICE_HOME, else the platform data dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (repeatable). Default: all interfaces, TCP and QUIC, on the
    /// node's port. A port of 0 means the node's port.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// The node's port, for TCP and QUIC, kept for later starts. Default: the port kept
    /// from the first start, which picked a free one (0 picks a new one).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// A peer to join through (repeatable), e.g. /ip4/192.0.2.1/tcp/4001/p2p/12D3Koo...
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Do not discover peers on the LAN by mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Do not ask the LAN gateway for a port mapping by UPnP.
    #[arg(long)]
    pub no_upnp: bool,
    /// Do not serve as a relay for peers that cannot be reached (limits: [relay] in
    /// config.toml).
    #[arg(long)]
    pub no_relay_service: bool,
    /// Whether peers can dial this node: auto (AutoNAT finds out; the default), public,
    /// or private (reserve relay slots at once).
    #[arg(long, value_name = "WHICH")]
    pub reachability: Option<String>,
    /// DHT mode: server (default), client, or auto.
    #[arg(long, value_name = "MODE")]
    pub dht_mode: Option<String>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve a status page on this address, e.g. 127.0.0.1:8080 (port 0 picks one);
    /// `lattice status` prints its URL, which carries the token it requires.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// Allow --http on an address other than loopback (anyone who can reach it and has
    /// the token sees the page; plain HTTP).
    #[arg(long)]
    pub http_allow_remote: bool,
    /// A document replica unheard of for this long stops holding back the compaction of
    /// the document's history (e.g. 30d, 12h, 90s; default 30d).
    #[arg(long, value_name = "DURATION")]
    pub compaction_horizon: Option<String>,
    /// Pre-shared key file: a private swarm that strangers cannot handshake with.
    #[arg(long, value_name = "FILE")]
    pub psk_file: Option<PathBuf>,
    /// Keep at most this much blob data (e.g. 10G); unpinned blobs fetched from peers are
    /// collected oldest first beyond it. Blobs added here, and pinned ones, never are.
    #[arg(long, value_name = "SIZE")]
    pub blob_quota: Option<String>,
    /// Defaults for this kind of machine: default, or small (a DHT client serving no
    /// relay, 8-16 peers, small caches, 1G blob quota); other flags and config.toml
    /// override it setting by setting.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Log format: text or json. Filter with LATTICE_LOG (or RUST_LOG).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum NetCommand {
    /// Disconnect these peers and refuse them until unblocked.
    Block {
        #[arg(required = true, value_name = "PEER")]
        peers: Vec<String>,
    },
    /// Let blocked peers back in.
    Unblock {
        #[arg(required = true, value_name = "PEER")]
        peers: Vec<String>,
    },
    /// Talk only to these peers; disconnect everyone else.
    AllowOnly {
        #[arg(required = true, value_name = "PEER")]
        peers: Vec<String>,
    },
    /// End allow-only mode (blocked peers stay blocked).
    AllowAll,
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Advertise NAME (e.g. sensor.temperature) until withdrawn or the daemon stops.
    Advertise {
        name: String,
        /// Metadata served to finders (repeatable).
        #[arg(long = "meta", value_name = "K=V")]
        meta: Vec<String>,
    },
    /// Stop advertising NAME.
    Withdraw { name: String },
    /// Peers offering NAME, closest first, with addresses, RTT and metadata.
    Find { name: String },
    /// Services this node advertises.
    Ls,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Send MESSAGE to every subscriber of TOPIC.
    Publish { topic: String, message: String },
    /// Print one line per message on TOPIC until interrupted.
    Subscribe { topic: String },
    /// Connected peers known to subscribe to TOPIC.
    Peers { topic: String },
}

#[derive(Subcommand, Debug)]
pub enum BlobCommand {
    /// Store a copy of FILE and provide it; prints {"hash", "cid", "size"} (hash = `b3sum
    /// FILE`; cid = the same as a CIDv1, `bafkr4…`). Every HASH below may be either.
    Add { file: std::path::PathBuf },
    /// Fetch a blob from its providers, verifying every range; resumes a partial fetch.
    Get {
        /// The blob's BLAKE3 hash in hex, or its CID.
        hash: String,
        /// Also put the blob here once complete: a hard link to the stored copy on the
        /// blob directory's file system (read-only, as the stored copy is: copy it to
        /// edit it; see docs/storage.md), a copy elsewhere.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Blobs held here, whole or in part.
    Ls,
    /// Delete a blob's data here.
    Rm { hash: String },
    /// Keep a blob whatever the quota.
    Pin { hash: String },
    /// Let a fetched blob be collected under the quota again.
    Unpin { hash: String },
    /// Peers providing a blob, according to the DHT (this node first if it has it).
    Providers { hash: String },
}

/// DOC is a document id or its local alias (its name).
#[derive(Subcommand, Debug)]
pub enum DocCommand {
    /// Create a document. Closed by default: only you (and --writer peers) may write.
    Create {
        name: String,
        /// Anyone may write.
        #[arg(long, conflicts_with = "writers")]
        open: bool,
        /// A peer allowed to write besides you (repeatable).
        #[arg(long = "writer", value_name = "PEER")]
        writers: Vec<String>,
    },
    /// Replicate a document another node created, by its id.
    Join {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Documents this node holds.
    Ls,
    /// One document's id, owner, digest and replicas.
    Info {
        #[arg(value_name = "DOC")]
        doc: String,
    },
    /// The whole document (or one key) as JSON.
    Get {
        #[arg(value_name = "DOC")]
        doc: String,
        key: Option<String>,
    },
    /// Set a register; VALUE is JSON if it parses, else a string.
    Set {
        #[arg(value_name = "DOC")]
        doc: String,
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Delete a key and everything observed under it.
    Del {
        #[arg(value_name = "DOC")]
        doc: String,
        key: String,
    },
    /// Add N (default 1, may be negative) to a counter.
    Incr {
        #[arg(value_name = "DOC")]
        doc: String,
        key: String,
        #[arg(allow_negative_numbers = true, default_value_t = 1)]
        n: i64,
    },
    /// Add members to a set.
    Add {
        #[arg(value_name = "DOC")]
        doc: String,
        key: String,
        /// Members starting with '-' go after `--`.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Remove the members this node has seen from a set.
    Rm {
        #[arg(value_name = "DOC")]
        doc: String,
        key: String,
        /// Members starting with '-' go after `--`.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Print one line per change (local or remote) until interrupted.
    Watch {
        #[arg(value_name = "DOC")]
        doc: String,
    },
    /// List the writers of a closed document; the owner may add or remove them. A removed
    /// writer's later writes are dropped everywhere, and removal is permanent.
    Writers {
        #[arg(value_name = "DOC")]
        doc: String,
        #[arg(long, value_name = "PEER")]
        add: Vec<String>,
        #[arg(long, value_name = "PEER")]
        remove: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TestnetCommand {
    /// Start N daemons on 127.0.0.1 (node 0 bootstraps the rest); returns once all joined.
    Up {
        #[arg(short = 'n', long = "nodes", value_name = "N")]
        nodes: usize,
        /// Node i listens on TCP port P + i (default: random ports).
        #[arg(long, value_name = "P")]
        base_port: Option<u16>,
        /// Every node on a host of its own: a network namespace with its own address, as
        /// on separate machines (root; `down` removes them).
        #[arg(long)]
        netns: bool,
        /// With --netns: which nodes sit behind NATs or have capped uplinks (a TOML file;
        /// see testnet/examples/nat.toml).
        #[arg(long, value_name = "FILE", requires = "netns")]
        topology: Option<PathBuf>,
        /// Extra arguments for every `lattice daemon`, after `--`.
        #[arg(last = true, value_name = "DAEMON-ARGS")]
        daemon_args: Vec<String>,
    },
    /// Each node: pid, alive, peers, address.
    Status,
    /// Stop every node (also after an interrupted `up`).
    Down,
    /// SIGKILL node I.
    Kill { index: usize },
    /// Start node I again on its data dir (same peer id).
    Restart { index: usize },
    /// Run any lattice command against node I: `testnet exec 3 -- status --json`.
    Exec {
        index: usize,
        #[arg(last = true, required = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Let nodes talk only within their group, e.g. "0-4|5-9".
    Partition { groups: String },
    /// End the partition and reconnect.
    Heal,
    /// Wait until every live node holds DOC with the same digest; prints
    /// {"converged_ms": ...}. Exits non-zero on timeout, naming the nodes that differ.
    WaitConverged {
        #[arg(value_name = "DOC")]
        doc: String,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 60.0)]
        timeout: f64,
    },
    /// A consistent global snapshot of one document (Chandy–Lamport): every node records
    /// what it held at one hybrid-clock time, and what was in flight between them.
    Snapshot {
        #[arg(value_name = "DOC")]
        doc: String,
    },
    /// Every node's log merged in time order, each line tagged with its node.
    Logs {
        /// Keep printing new lines until interrupted.
        #[arg(long)]
        follow: bool,
        /// Only the lines naming this trace id (printed by `doc set/add/incr --json` and
        /// `blob get --json`): one write's or fetch's path through the network.
        #[arg(long, value_name = "ID")]
        trace: Option<String>,
    },
    /// Simulate N replicas of one document in this process, deterministically: message
    /// loss, duplication, partitions and crashes. Exits non-zero unless every replica
    /// converged and no acknowledged write was lost.
    Sim(SimArgs),
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Number of virtual replicas.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// RNG seed: the same seed gives the same report, byte for byte.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.05)]
    pub loss: f64,
    /// Probability that a message is delivered twice.
    #[arg(long, default_value_t = 0.02)]
    pub dup: f64,
    /// Network partitions during the write phase (each heals).
    #[arg(long, default_value_t = 2)]
    pub partitions: usize,
    /// Replica crashes during the write phase (each loses un-persisted state).
    #[arg(long, default_value_t = 3)]
    pub crashes: usize,
    /// Writes across all replicas.
    #[arg(long, default_value_t = 150)]
    pub writes: usize,
    /// Replicas do not compact their history (to compare: the report shows the largest
    /// log either way).
    #[arg(long)]
    pub no_compaction: bool,
    /// Replica 0 goes down for this many virtual seconds a quarter into the run (the
    /// compaction horizon is 5 s): it comes back to the others' folds.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub away: u64,
}
