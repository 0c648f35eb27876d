//! One module per command group; each turns parsed arguments into calls and output.

mod testnet;

use std::process::ExitCode;

use crate::args::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Testnet(cmd) => testnet::run(&cli.global, cmd),
    }
}
