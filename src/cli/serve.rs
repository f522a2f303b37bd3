//! `berth serve`: run a node until SIGTERM or Ctrl-C, then stop gracefully;
//! a second signal stops it at once.

use super::CliResult;
use crate::config::ServeArgs;

pub async fn run(args: ServeArgs) -> CliResult<()> {
    let config = args.resolve()?;
    let server = crate::server::start(&config).await?;
    let mut signals = Signals::new();
    signals.next().await;
    tracing::info!(
        timeout = ?config.shutdown.timeout,
        "shutdown signal received; stopping gracefully (a second signal stops at once)"
    );
    tokio::select! {
        () = server.shutdown() => {}
        () = signals.next() => {
            // Every write berth acknowledged is already durable, so
            // leaving without the last steps loses nothing.
            tracing::warn!("second shutdown signal; stopping at once");
        }
    }
    Ok(())
}

/// SIGTERM and Ctrl-C (SIGINT).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
