//! `lattice service ...` and `lattice topic ...`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use lattice_node::control::api::{
    self, method, AdvertiseParams, Done, NameParams, Provider, PublishParams, SubscribeParams,
};

use super::node::{call, session};
use crate::args::{Global, ServiceCommand, TopicCommand};
use crate::output;

fn meta(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--meta {p:?}: expected KEY=VALUE");
        };
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

pub fn service(g: &Global, cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServiceCommand::Advertise { name, meta: m } => {
            let p = AdvertiseParams {
                name: name.clone(),
                meta: meta(&m)?,
            };
            let d: Done = call::<method::ServiceAdvertise>(g, &p)?;
            output::print(g.json, &d, format!("advertising {name}"))?;
        }
        ServiceCommand::Withdraw { name } => {
            let d: Done = call::<method::ServiceWithdraw>(g, &NameParams { name: name.clone() })?;
            output::print(g.json, &d, format!("withdrew {name}"))?;
        }
        ServiceCommand::Find { name } => {
            let found: Vec<Provider> =
                call::<method::ServiceFind>(g, &NameParams { name: name.clone() })?;
            let mut text = String::new();
            for p in &found {
                let meta: Vec<String> = p.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(
                    text,
                    "{}  {:>8.2} ms  {}  {}",
                    p.peer_id,
                    p.rtt_ms,
                    meta.join(","),
                    p.addrs.first().map_or("", String::as_str)
                );
            }
            if found.is_empty() {
                text = format!("nobody offers {name}");
            }
            output::print(g.json, &found, text.trim_end())?;
        }
        ServiceCommand::Ls => {
            let ads: BTreeMap<String, BTreeMap<String, String>> =
                call::<method::ServiceLs>(g, &api::NoParams)?;
            let text = if ads.is_empty() {
                "no services advertised".to_owned()
            } else {
                ads.keys().cloned().collect::<Vec<_>>().join("\n")
            };
            output::print(g.json, &ads, text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn topic(g: &Global, cmd: TopicCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TopicCommand::Publish { topic, message } => {
            let d: Done = call::<method::TopicPublish>(
                g,
                &PublishParams {
                    topic: topic.clone(),
                    message,
                },
            )?;
            output::print(g.json, &d, format!("published on {topic}"))?;
        }
        TopicCommand::Peers { topic } => {
            let peers: Vec<String> = call::<method::TopicPeers>(g, &SubscribeParams { topic })?;
            let text = if peers.is_empty() {
                "no known subscribers".to_owned()
            } else {
                peers.join("\n")
            };
            output::print(g.json, &peers, text)?;
        }
        TopicCommand::Subscribe { topic } => {
            session(g, async |c| {
                let id = c
                    .stream::<method::TopicSubscribe>(&SubscribeParams { topic })
                    .await?;
                while let Some(m) = c.next_event(&id).await? {
                    let line = if g.json {
                        serde_json::to_string(&m)?
                    } else {
                        m.data.clone()
                    };
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
                Ok(())
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
