//! `lattice id | status | peers | dial`: calls over the control socket.

use std::fmt::Write as _;
use std::process::ExitCode;

use lattice_node::config;
use lattice_node::control::api::{self, method, Call};
use lattice_node::control::Client;

use crate::args::Global;
use crate::output;

/// Connects to the daemon and makes one call of method `M`.
pub fn call<M: Call>(g: &Global, params: &M::Params) -> anyhow::Result<M::Result> {
    session(g, async |c| Ok(c.call::<M>(params).await?))
}

/// Connects to the daemon and runs `f` with the connection.
pub fn session<T>(
    g: &Global,
    f: impl AsyncFnOnce(&mut Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let socket = config::socket_path(g.socket.as_deref(), None)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = Client::connect(&socket).await?;
        f(&mut c).await
    })
}

pub fn id(g: &Global) -> anyhow::Result<ExitCode> {
    let r: api::IdInfo = call::<method::Id>(g, &api::NoParams)?;
    let mut text = format!("peer id  {}\n", r.peer_id);
    for a in &r.listen_addrs {
        let _ = writeln!(text, "listen   {a}/p2p/{}", r.peer_id);
    }
    output::print(g.json, &r, text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

pub fn status(g: &Global) -> anyhow::Result<ExitCode> {
    let s: api::Status = call::<method::Status>(g, &api::NoParams)?;
    let mut text = String::new();
    let _ = writeln!(text, "peer id     {}", s.peer_id);
    let _ = writeln!(text, "version     {}", s.version);
    let _ = writeln!(text, "uptime      {} s", s.uptime_s);
    let _ = writeln!(
        text,
        "peers       {} connected, {} in the DHT",
        s.peers, s.dht_peers
    );
    if let Some(t) = s.connection_target {
        let _ = writeln!(
            text,
            "target      {}-{} peers when idle ({} idle ones disconnected so far)",
            t.low, t.high, s.trimmed_peers
        );
    }
    let _ = writeln!(text, "docs        {}", s.docs);
    let _ = writeln!(text, "blobs       {}", s.blobs);
    let _ = writeln!(text, "data dir    {}", s.data_dir);
    if let Some(url) = &s.status_page {
        let _ = writeln!(text, "status page {url}");
    }
    for a in &s.listen_addrs {
        let _ = writeln!(text, "listen      {a}");
    }
    if !s.blocked.is_empty() {
        let _ = writeln!(text, "blocked     {}", s.blocked.join(" "));
    }
    if let Some(only) = &s.allow_only {
        let _ = writeln!(text, "allow only  {}", only.join(" "));
    }
    output::print(g.json, &s, text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

pub fn peers(g: &Global) -> anyhow::Result<ExitCode> {
    let peers: Vec<api::Peer> = call::<method::Peers>(g, &api::NoParams)?;
    let mut text = format!("{:<54} {:>9}  {:<9} ADDRESSES", "PEER", "RTT", "STATE");
    for p in &peers {
        let rtt = p
            .rtt_ms
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1} ms"));
        let mut state = match (p.connected, p.in_dht) {
            (true, true) => "conn+dht",
            (true, false) => "connected",
            (false, _) => "dht",
        }
        .to_owned();
        // Only worth a word when requests to it do not go.
        if !matches!(p.breaker.as_str(), "closed" | "") {
            state.push_str(&format!(" breaker {}", p.breaker));
        }
        let _ = write!(
            text,
            "\n{:<54} {rtt:>9}  {state:<9} {}",
            p.peer_id,
            p.addrs.join(" ")
        );
    }
    if peers.is_empty() {
        text = "no peers".to_owned();
    }
    output::print(g.json, &peers, text)?;
    Ok(ExitCode::SUCCESS)
}

pub fn dial(g: &Global, addr: String) -> anyhow::Result<ExitCode> {
    let r: api::Dialed = call::<method::Dial>(g, &api::DialParams { addr })?;
    output::print(g.json, &r, format!("connected to {}", r.peer_id))?;
    Ok(ExitCode::SUCCESS)
}
