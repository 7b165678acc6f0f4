//! `outpost-burn`: see [`outpost_workloads::burn`].

#![forbid(unsafe_code)]

use std::process::ExitCode;

use outpost_workloads::{burn, cli};

fn main() -> ExitCode {
    let config = cli::run("outpost-burn", burn::USAGE, burn::parse);
    match burn::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            outpost_workloads::errln!("outpost-burn: {e}");
            ExitCode::FAILURE
        }
    }
}
