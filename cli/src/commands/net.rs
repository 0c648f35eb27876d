//! `lattice net block | unblock | allow-only | allow-all`

use std::process::ExitCode;

use lattice_node::control::api::{self, method};

use super::node::call;
use crate::args::{Global, NetCommand};
use crate::output;

pub fn run(g: &Global, cmd: NetCommand) -> anyhow::Result<ExitCode> {
    let (m, peers, what) = match cmd {
        NetCommand::Block { peers } => (method::NET_BLOCK, Some(peers), "blocked"),
        NetCommand::Unblock { peers } => (method::NET_UNBLOCK, Some(peers), "unblocked"),
        NetCommand::AllowOnly { peers } => (method::NET_ALLOW_ONLY, Some(peers), "allowing only"),
        NetCommand::AllowAll => (method::NET_ALLOW_ALL, None, "allowing all peers"),
    };
    let done: api::Done = match &peers {
        Some(p) => call(g, m, &api::PeersParams { peers: p.clone() })?,
        None => call(g, m, &())?,
    };
    let text = match &peers {
        Some(p) => format!("{what} {}", p.join(" ")),
        None => what.to_owned(),
    };
    output::print(g.json, &done, text)?;
    Ok(ExitCode::SUCCESS)
}
