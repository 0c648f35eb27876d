//! One module per command group; each turns parsed arguments into calls and output.

mod blob;
mod daemon;
mod doc;
mod doctor;
mod net;
mod node;
mod share;
mod testnet;

use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Daemon(args) => daemon::run(g, *args),
        Command::Id => node::id(g),
        Command::Status => node::status(g),
        Command::Peers => node::peers(g),
        Command::Dial { addr } => node::dial(g, addr),
        Command::Net(cmd) => net::run(g, cmd),
        Command::Doctor { data_dir } => doctor::run(g, data_dir),
        Command::Doc(cmd) => doc::run(g, cmd),
        Command::Blob(cmd) => blob::run(g, cmd),
        Command::Service(cmd) => share::service(g, cmd),
        Command::Topic(cmd) => share::topic(g, cmd),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lattice",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Testnet(t) => testnet::run(g, t),
    }
}
