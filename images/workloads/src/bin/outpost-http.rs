//! `outpost-http`: see [`outpost_workloads::http`].

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use outpost_workloads::{cli, http};

fn main() -> ExitCode {
    let config = cli::run("outpost-http", http::USAGE, |args| {
        http::parse(
            args,
            std::env::var("PORT").ok(),
            std::env::var("UPSTREAM").ok(),
        )
    });
    if config.probe {
        return match http::probe(config.port) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                outpost_workloads::outln!("outpost-http: /healthz is failing");
                ExitCode::FAILURE
            }
            Err(e) => {
                outpost_workloads::outln!("outpost-http: probe: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let state = Arc::new(
        http::State::new(http::pod_name(std::env::var("POD_NAME").ok()))
            .with_upstream(config.upstream.clone()),
    );
    if config.once {
        // One call at the pod's first instant: Service routing must be in
        // place before the pod's own process runs.
        let answer = state.root();
        outpost_workloads::outln!("{}", answer.body.trim_end());
        return if answer.status == 200 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    match http::serve(&config, state) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            outpost_workloads::errln!(
                "outpost-http: cannot listen on 0.0.0.0:{}: {e}",
                config.port
            );
            ExitCode::FAILURE
        }
    }
}
