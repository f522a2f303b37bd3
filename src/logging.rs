//! Logging setup: the filter, the format, and which of openraft's lines are
//! left out by default.
//!
//! openraft logs every failed call to a member, at WARN or ERROR, on every
//! retry: a member that is down, or not in DNS yet while a cluster starts,
//! fills the log. berth says that once per change of state itself
//! ([`crate::cluster::peer::PeerPool::call_failed`]), so those lines are
//! dropped unless the filter was given explicitly.

use std::io::IsTerminal;

use tracing::Metadata;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::cli::LogFormat;

/// Used when neither `--log` nor `RUST_LOG` says otherwise: openraft
/// narrates every election and retry at info.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

/// Installs the global subscriber: `filter` (else `RUST_LOG`, else
/// [`DEFAULT_FILTER`] without openraft's per-call failures), to stderr.
pub fn init(filter: Option<&str>, format: LogFormat) {
    let explicit = filter
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok());
    let quiet = explicit.is_none();
    let env = EnvFilter::new(explicit.as_deref().unwrap_or(DEFAULT_FILTER));
    let peers = filter_fn(move |meta| !(quiet && is_peer_call_failure(meta)));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(peers).with_filter(env))
        .init();
}

/// openraft's line for one failed call to one member: its replication
/// task's errors, the leader's warnings about a failed heartbeat or append,
/// and the core's vote and leadership-confirmation failures, which name the
/// member in a `target` field. The core's other errors (a storage failure
/// that stops it, say) have no such field and stay, as do the replication
/// handler's errors.
fn is_peer_call_failure(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let level = *meta.level();
    if !target.starts_with("openraft") || level > tracing::Level::WARN {
        return false;
    }
    target.starts_with("openraft::replication")
        || target.starts_with("openraft::engine::handler::replication_handler")
            && level == tracing::Level::WARN
        || meta.fields().field("target").is_some() && target.starts_with("openraft::core")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Records the messages of the events it sees.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0
                .lock()
                .unwrap()
                .push(event.metadata().target().to_owned());
        }
    }

    #[test]
    fn drops_openraft_per_call_failures_and_keeps_the_rest() {
        let seen = Seen::default();
        let filter = filter_fn(|meta| !is_peer_call_failure(meta));
        let subscriber = tracing_subscriber::registry().with(seen.clone().with_filter(filter));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "openraft::replication", err = "unreachable", "RPCError");
            tracing::warn!(target: "openraft::replication", error = "x", "error replication");
            tracing::error!(target: "openraft::core::raft_core", target = "2", error = "x", "while requesting vote");
            tracing::error!(target: "openraft::core::raft_core", error = "disk", "quit RaftCore::main on error");
            tracing::warn!(target: "openraft::engine::handler::replication_handler", "heartbeat error");
            tracing::error!(target: "openraft::engine::handler::replication_handler", "update_matching");
            tracing::warn!(target: "berth::cluster::peer", peer = 2, "peer does not answer");
            tracing::info!(target: "openraft::replication", "a narration kept by level filters");
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "openraft::core::raft_core",
                "openraft::engine::handler::replication_handler",
                "berth::cluster::peer",
                "openraft::replication"
            ]
        );
    }
}
