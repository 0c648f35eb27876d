//! `lattice daemon`

use std::process::ExitCode;

use anyhow::Context;
use lattice_node::config::{self, FileConfig, LogFormat};
use lattice_node::config::{Addr, Profile, Reachability};
use lattice_node::Config;

use crate::args::{DaemonArgs, Global};
use crate::memory;

fn addrs(list: &[String], flag: &str) -> anyhow::Result<Vec<Addr>> {
    list.iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("invalid {flag} multiaddr {a:?}"))
        })
        .collect()
}

/// Defaults, then the config file, then flags.
fn config(g: &Global, a: &DaemonArgs) -> anyhow::Result<(Config, LogFormat)> {
    let file = match config::config_file() {
        Some(p) => FileConfig::load(&p)?.unwrap_or_default(),
        None => FileConfig::default(),
    };
    let data_dir = config::data_dir(a.data_dir.as_deref())?;
    let socket = config::socket_path(g.socket.as_deref(), Some(&data_dir))?;
    let profile: Profile = match a.profile.as_deref().or(file.profile.as_deref()) {
        Some(p) => p.parse().map_err(anyhow::Error::msg)?,
        None => Profile::default(),
    };
    let dht_mode = match a.dht_mode.as_deref().or(file.dht_mode.as_deref()) {
        Some(m) => m.parse().map_err(anyhow::Error::msg)?,
        None => profile.dht_mode(),
    };
    let connection_target = match &file.connections {
        Some(c) => c
            .target(profile.connection_target())
            .map_err(|e| anyhow::anyhow!("[connections] in config.toml: {e}"))?,
        None => profile.connection_target(),
    };
    // `--json` on the daemon asks for machine-readable output: JSON log lines.
    let log_format = match &a.log_format {
        Some(f) => f.parse().map_err(anyhow::Error::msg)?,
        None if g.json => LogFormat::Json,
        None => file.log_format.unwrap_or_default(),
    };
    let listen = if a.listen.is_empty() {
        file.listen.unwrap_or_default()
    } else {
        addrs(&a.listen, "--listen")?
    };
    let bootstrap = if a.bootstrap.is_empty() {
        file.bootstrap.unwrap_or_default()
    } else {
        addrs(&a.bootstrap, "--bootstrap")?
    };
    let reachability = match a.reachability.as_deref().or(file.reachability.as_deref()) {
        Some(r) => r.parse().map_err(anyhow::Error::msg)?,
        None => Reachability::default(),
    };
    let relay_limits = file.relay.as_ref().map(|r| r.limits()).transpose()?;
    let cfg = Config {
        data_dir,
        socket,
        listen,
        port: a.port.or(file.port),
        bootstrap,
        mdns: !a.no_mdns && file.mdns.unwrap_or(true),
        upnp: !a.no_upnp && file.upnp.unwrap_or(true),
        dht_mode,
        relay_service: !a.no_relay_service && file.relay_service.unwrap_or(profile.relay_service()),
        relay_limits: relay_limits.unwrap_or_default(),
        reachability,
        metrics: a.metrics.or(file.metrics),
        http: a.http.or(file.http),
        http_allow_remote: a.http_allow_remote || file.http_allow_remote.unwrap_or(false),
        psk_file: a.psk_file.clone().or(file.psk_file),
        blob_quota: a
            .blob_quota
            .as_deref()
            .or(file.blob_quota.as_deref())
            .map(config::parse_size)
            .transpose()?
            .or(profile.blob_quota()),
        profile,
        connection_target,
        store_cache: match file.store_cache.as_deref() {
            Some(s) => usize::try_from(config::parse_size(s)?)?,
            None => profile.store_cache(),
        },
        shutdown_grace: std::time::Duration::from_secs(5),
        compaction_horizon: match a
            .compaction_horizon
            .as_deref()
            .or(file.compaction_horizon.as_deref())
        {
            Some(s) => config::parse_duration(s)?,
            None => config::COMPACTION_HORIZON,
        },
    };
    Ok((cfg, log_format))
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let text = std::env::var("LATTICE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        // libp2p's gossipsub logs every RPC it refuses from a peer at error level: a
        // hostile peer could fill the disk with them. Lattice logs its own refusals, and
        // blocks peers that keep earning them.
        .unwrap_or_else(|| {
            "info,libp2p_kad::behaviour=error,libp2p_gossipsub::behaviour=off".to_owned()
        });
    // `level` or `target=level`, comma-separated (regex-free, unlike an EnvFilter).
    let filter = text.parse::<Targets>().unwrap_or_else(|e| {
        eprintln!("lattice: ignoring LATTICE_LOG={text:?} ({e}); logging at info");
        Targets::new().with_default(LevelFilter::INFO)
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(layer.json()).init(),
        LogFormat::Text => registry.with(layer).init(),
    }
}

pub fn run(g: &Global, a: DaemonArgs) -> anyhow::Result<ExitCode> {
    memory::tune_malloc();
    let (cfg, format) = config(g, &a)?;
    init_logging(format);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.profile == Profile::Small {
        // One worker (and its stack and allocator arena) is enough for a small device.
        rt.worker_threads(1);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.spawn(memory::give_back());
    rt.block_on(lattice_node::daemon::run(cfg))?;
    Ok(ExitCode::SUCCESS)
}
