//! `lattice net block | unblock | allow-only | allow-all`

use std::process::ExitCode;

use lattice_node::control::api::{self, method, Call};

use super::node::call;
use crate::args::{Global, NetCommand};
use crate::output;

pub fn run(g: &Global, cmd: NetCommand) -> anyhow::Result<ExitCode> {
    let (done, text) = match cmd {
        NetCommand::Block { peers } => on_peers::<method::NetBlock>(g, peers, "blocked")?,
        NetCommand::Unblock { peers } => on_peers::<method::NetUnblock>(g, peers, "unblocked")?,
        NetCommand::AllowOnly { peers } => {
            on_peers::<method::NetAllowOnly>(g, peers, "allowing only")?
        }
        NetCommand::AllowAll => (
            call::<method::NetAllowAll>(g, &api::NoParams)?,
            "allowing all peers".to_owned(),
        ),
    };
    output::print(g.json, &done, text)?;
    Ok(ExitCode::SUCCESS)
}

/// Calls `M` on a list of peers; the text says `what` was done to which.
fn on_peers<M>(g: &Global, peers: Vec<String>, what: &str) -> anyhow::Result<(api::Done, String)>
where
    M: Call<Params = api::PeersParams, Result = api::Done>,
{
    let text = format!("{what} {}", peers.join(" "));
    Ok((call::<M>(g, &api::PeersParams { peers })?, text))
}
