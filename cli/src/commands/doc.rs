//! `lattice doc ...`: documents over the control socket.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use lattice_node::control::api::{self, method, Call};

use super::node::{call, session};
use crate::args::{DocCommand, Global};
use crate::output;

pub fn run(g: &Global, cmd: DocCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DocCommand::Create {
            name,
            open,
            writers,
        } => {
            let p = api::CreateParams {
                name,
                open,
                writers,
            };
            let d: api::DocInfo = call::<method::DocCreate>(g, &p)?;
            let kind = if d.open { "open" } else { "closed" };
            output::print(
                g.json,
                &d,
                format!("{} ({kind}, alias {:?})", d.doc, d.name),
            )?;
        }
        DocCommand::Join { id } => {
            let d: api::DocInfo = call::<method::DocJoin>(g, &api::DocParams { doc: id })?;
            output::print(g.json, &d, format!("joined {} ({:?})", d.doc, d.name))?;
        }
        DocCommand::Ls => {
            let docs: Vec<api::DocInfo> = call::<method::DocLs>(g, &api::NoParams)?;
            let mut text = format!(
                "{:<52}  {:<16} {:<6} {:>6} {:>8}",
                "DOC", "NAME", "ACCESS", "KEYS", "REPLICAS"
            );
            for d in &docs {
                let access = if d.open { "open" } else { "closed" };
                let _ = write!(
                    text,
                    "\n{:<52}  {:<16} {access:<6} {:>6} {:>8}",
                    d.doc, d.name, d.keys, d.replicas
                );
            }
            if docs.is_empty() {
                text = "no documents (create one with `lattice doc create NAME`)".into();
            }
            output::print(g.json, &docs, text)?;
        }
        DocCommand::Info { doc } => {
            let d: api::DocInfo = call::<method::DocInfo>(g, &api::DocParams { doc })?;
            let text = format!(
                "doc       {}\nname      {}\naccess    {}\nowner     {}\ndigest    {}\nkeys      {}\ndeltas    {}\nreplicas  {}",
                d.doc,
                d.name,
                if d.open { "open" } else { "closed" },
                d.owner,
                d.digest,
                d.keys,
                d.deltas,
                d.replicas
            ) + &format!(
                "\nhistory   {} bytes of deltas for {} bytes of content\nlag       {}\nbehind    {} known write(s) not yet applied here",
                d.log_bytes,
                d.state_bytes,
                match &d.lag {
                    Some(l) => format!(
                        "latest {} ms, median {} ms, max {} ms ({} write(s) from peers, last 10 min)",
                        l.last_ms, l.p50_ms, l.max_ms, l.samples
                    ),
                    None => "no writes from peers in the last 10 min".into(),
                },
                d.behind
            );
            output::print(g.json, &d, text)?;
        }
        DocCommand::Get { doc, key } => {
            let v: serde_json::Value = call::<method::DocGet>(g, &api::GetParams { doc, key })?;
            output::print(g.json, &v, serde_json::to_string_pretty(&v)?)?;
        }
        DocCommand::Set { doc, key, value } => {
            written::<method::DocSet>(g, &api::SetParams { doc, key, value })?;
        }
        DocCommand::Del { doc, key } => {
            written::<method::DocDel>(g, &api::KeyParams { doc, key })?;
        }
        DocCommand::Incr { doc, key, n } => {
            written::<method::DocIncr>(g, &api::IncrParams { doc, key, by: n })?;
        }
        DocCommand::Add { doc, key, members } => {
            written::<method::DocAdd>(g, &api::MembersParams { doc, key, members })?;
        }
        DocCommand::Rm { doc, key, members } => {
            written::<method::DocRm>(g, &api::MembersParams { doc, key, members })?;
        }
        DocCommand::Watch { doc } => watch(g, doc)?,
        DocCommand::Writers { doc, add, remove } => {
            let w: api::Writers =
                call::<method::DocWriters>(g, &api::WritersParams { doc, add, remove })?;
            let mut text = format!("owner    {}", w.owner);
            if w.open {
                text.push_str("\nopen: anyone may write");
            }
            for x in &w.writers {
                let _ = match x.cut {
                    Some(cut) => {
                        write!(text, "\nremoved  {} (writes up to #{cut} kept)", x.peer_id)
                    }
                    None => write!(text, "\nwriter   {}", x.peer_id),
                };
            }
            output::print(g.json, &w, text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn written<M: Call<Result = api::Written>>(g: &Global, params: &M::Params) -> anyhow::Result<()> {
    let w = call::<M>(g, params)?;
    output::print(
        g.json,
        &w,
        format!("saved (write #{}, trace {})", w.seq, w.trace),
    )
}

/// Streams changes until the daemon ends the stream or the user interrupts.
fn watch(g: &Global, doc: String) -> anyhow::Result<()> {
    session(g, async |c| {
        let id = c
            .stream::<method::DocWatch>(&api::DocParams { doc })
            .await?;
        while let Some(change) = c.next_event(&id).await? {
            let line = if g.json {
                serde_json::to_string(&change)?
            } else {
                let origin = if change.local { "local " } else { "remote" };
                let mut line = origin.to_owned();
                for (k, v) in &change.changes {
                    let _ = write!(line, " {k}={v}");
                }
                line
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok(())
    })
}
