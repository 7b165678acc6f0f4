//! `outpost-exit`: see [`outpost_workloads::exit`].

#![forbid(unsafe_code)]

use std::process::ExitCode;

use outpost_workloads::{cli, exit};

fn main() -> ExitCode {
    let config = cli::run("outpost-exit", exit::USAGE, exit::parse);
    ExitCode::from(exit::run(&config))
}
