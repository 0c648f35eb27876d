//! `lattice blob ...`: content-addressed files over the control socket.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use lattice_node::control::api::{
    self, method, AddParams, BlobInfo, FetchEvent, FetchParams, HashParams, ProviderInfo,
};

use super::node::{call, session};
use crate::args::{BlobCommand, Global};
use crate::output;

fn absolute(p: &Path) -> anyhow::Result<String> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    abs.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not valid UTF-8", abs.display()))
}

fn line(b: &BlobInfo) -> String {
    let state = match (b.complete, b.pinned, b.local) {
        (false, _, _) => "partial",
        (true, true, _) => "pinned",
        (true, false, true) => "added",
        (true, false, false) => "fetched",
    };
    format!("{}  {:>14}  {state}", b.hash, b.size)
}

pub fn run(g: &Global, cmd: BlobCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BlobCommand::Add { file } => {
            let path = absolute(&file)?;
            let b: BlobInfo = call::<method::BlobAdd>(g, &AddParams { path })?;
            let out = serde_json::json!({"hash": b.hash, "cid": b.cid, "size": b.size});
            output::print(
                g.json,
                &out,
                format!("{}  {} bytes\ncid {}", b.hash, b.size, b.cid),
            )?;
        }
        BlobCommand::Get { hash, out } => return get(g, hash, out.as_deref()),
        BlobCommand::Ls => {
            let list: Vec<BlobInfo> = call::<method::BlobLs>(g, &api::NoParams)?;
            let mut text = format!("{:<64}  {:>14}  STATE", "HASH", "SIZE");
            for b in &list {
                let _ = write!(text, "\n{}", line(b));
            }
            if list.is_empty() {
                text = "no blobs (add one with `lattice blob add FILE`)".into();
            }
            output::print(g.json, &list, text)?;
        }
        BlobCommand::Rm { hash } => {
            let b: BlobInfo = call::<method::BlobRm>(g, &HashParams { hash })?;
            output::print(g.json, &b, format!("removed {}", b.hash))?;
        }
        BlobCommand::Pin { hash } => {
            let b: BlobInfo = call::<method::BlobPin>(g, &HashParams { hash })?;
            output::print(g.json, &b, line(&b))?;
        }
        BlobCommand::Unpin { hash } => {
            let b: BlobInfo = call::<method::BlobUnpin>(g, &HashParams { hash })?;
            output::print(g.json, &b, line(&b))?;
        }
        BlobCommand::Providers { hash } => {
            let list: Vec<ProviderInfo> = call::<method::BlobProviders>(g, &HashParams { hash })?;
            let text = if list.is_empty() {
                "no providers found".to_owned()
            } else {
                list.iter()
                    .map(|p| p.peer_id.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            output::print(g.json, &list, text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams a fetch: a progress bar on a terminal, the result at the end.
fn get(g: &Global, hash: String, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let out = out.map(absolute).transpose()?;
    let bar = (!g.json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let end = session(g, async |c| {
        let id = c
            .stream::<method::BlobGet>(&FetchParams { hash, out })
            .await?;
        while let Some(p) = c.next_event(&id).await? {
            match p {
                FetchEvent::Progress {
                    have,
                    size,
                    providers,
                } => {
                    if let Some(b) = &bar {
                        b.set_length(size);
                        b.set_position(have);
                        b.set_message(format!("{providers} provider(s)"));
                    }
                }
                done => return Ok(Some(done)),
            }
        }
        Ok(None)
    })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match &end {
        Some(FetchEvent::Done { blob, path, .. }) => {
            let text = match path {
                Some(p) => format!("{}  {} bytes  written to {p}", blob.hash, blob.size),
                None => format!("{}  {} bytes", blob.hash, blob.size),
            };
            output::print(g.json, &end, text)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(FetchEvent::Failed { message, trace }) => bail!("{message} (trace {trace})"),
        _ => bail!("the daemon ended the fetch without a result"),
    }
}
