//! `lattice testnet ...`

use std::process::ExitCode;

use lattice_testnet::sim::SimOptions;

use crate::args::{Global, SimArgs, TestnetCommand};
use crate::output;

pub fn run(global: &Global, cmd: TestnetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TestnetCommand::Sim(args) => sim(global, args),
    }
}

fn sim(global: &Global, a: SimArgs) -> anyhow::Result<ExitCode> {
    let opts = SimOptions {
        nodes: a.nodes,
        seed: a.seed,
        loss: a.loss,
        dup: a.dup,
        partitions: a.partitions,
        crashes: a.crashes,
        writes: a.writes,
    };
    let report = opts.run()?;
    output::print(global.json, &report, &report)?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
