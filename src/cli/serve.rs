//! `berth serve`: run a node until SIGTERM or Ctrl-C, then drain.

use super::CliResult;
use crate::config::ServeArgs;

pub async fn run(args: ServeArgs) -> CliResult<()> {
    let config = args.resolve()?;
    let server = crate::server::start(&config).await?;
    shutdown_signal().await;
    tracing::info!("shutdown signal received; draining in-flight requests");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
