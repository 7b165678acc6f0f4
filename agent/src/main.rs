//! `outpost-agent`: enrols this box with the controller, reports its pressure
//! conditions and keeps the link alive. See `outpost-agent --help`.

use clap::Parser;
use outpost_agent::config::Flags;
use outpost_agent::session;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn,rustls=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match Flags::parse().resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid agent configuration:\n{e}");
            std::process::exit(2);
        }
    };
    // Two worker threads at most: the agent's work is a few sockets and a
    // probe every few seconds, and small boxes need their cores for pods.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
