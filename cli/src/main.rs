//! `lattice`: the command-line client of a Lattice node, and the testnet tool.

mod args;
mod commands;
mod memory;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    match commands::run(args) {
        Ok(code) => code,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lattice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
