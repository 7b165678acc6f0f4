//! `outpost-agent`: enrols this box with the controller, reports its pressure
//! conditions and keeps the link alive. See `outpost-agent --help`.

use clap::Parser;
use outpost_agent::config::Flags;
use outpost_agent::session;
use tracing_subscriber::filter::Targets;

/// Log levels when `RUST_LOG` is unset or not understood.
const DEFAULT_LOG: &str = "info,quinn=warn,rustls=warn";

fn main() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `RUST_LOG` as `level` and `target=level` directives: a target filter,
    // not the regex-backed EnvFilter (whose matcher code and tables would
    // stay resident in the agent for nothing).
    let env = std::env::var("RUST_LOG").ok();
    let (filter, bad) = match env.as_deref().map(str::parse::<Targets>) {
        Some(Ok(t)) => (t, None),
        Some(Err(e)) => (default_filter(), Some(e)),
        None => (default_filter(), None),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
    if let Some(e) = bad {
        tracing::warn!(
            "RUST_LOG is not a list of level and target=level directives ({e}); using {DEFAULT_LOG}"
        );
    }
    let cfg = match Flags::parse().resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid agent configuration:\n{e}");
            std::process::exit(2);
        }
    };
    // One thread: the agent's work is a few sockets, a probe every few
    // seconds and engine calls, all waiting on I/O; small boxes need their
    // cores for pods; and every thread that allocates costs a stack and a
    // malloc arena of resident memory. Blocking work (netlink, entering a
    // pod's namespace) has threads of its own.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(session::run(cfg, shutdown_signal())) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
    tracing::info!("shutting down");
}

fn default_filter() -> Targets {
    DEFAULT_LOG.parse().expect("the default log filter parses")
}
