//! `outpost-hog`: see [`outpost_workloads::hog`].

#![forbid(unsafe_code)]

use std::process::ExitCode;

use outpost_workloads::{cli, hog};

fn main() -> ExitCode {
    let config = cli::run("outpost-hog", hog::USAGE, hog::parse);
    match hog::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            outpost_workloads::errln!("outpost-hog: {e}");
            ExitCode::FAILURE
        }
    }
}
