//! Printing results: human text or `--json`.

use std::io::{self, Write};

use serde::Serialize;

/// Prints `value` as one JSON document, or `text` for a person.
pub fn print(
    json: bool,
    value: &impl Serialize,
    text: impl std::fmt::Display,
) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{text}")?;
    }
    out.flush()?;
    Ok(())
}

/// True if the error is a closed stdout (`lattice ... | head`), which is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}
