//! Linearizable reads, batched. Every read needs a read index obtained
//! after it arrived; one round serves every read that arrived before the
//! round began, so under load the cost is one round trip per batch, not per
//! request.
//!
//! Reads that may fall back to local state (by digest) also need to know
//! promptly when a round cannot succeed: each read index attempt that fails
//! for want of a leader or a quorum is remembered for [`FAILURE_MEMORY`],
//! until one succeeds, so such reads stop waiting at the first failure and
//! the next ones do not wait at all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError};

type Waiter = oneshot::Sender<Result<(), RoundFailed>>;

/// Why a round failed, as every waiter of the round gets it.
#[derive(Clone)]
struct RoundFailed {
    /// No leader or quorum could be reached, as opposed to, say, this node
    /// being too slow to apply up to the index.
    cut_off: bool,
    reason: String,
}

/// How long a failed read index attempt keeps reads that may fall back from
/// waiting for a round. Long enough that a pull from a node without a
/// quorum pays for a probe at most once per this period, short enough that
/// freshness returns soon after the quorum does (a success clears it at once).
pub const FAILURE_MEMORY: Duration = Duration::from_secs(2);

/// The last read index attempt that failed for want of a quorum: when, and why.
type Failure = Option<(Instant, String)>;

/// Reads waiting for the next round.
pub struct ReadBarrier {
    tx: mpsc::UnboundedSender<Waiter>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Waiter>>>,
    failure: watch::Sender<Failure>,
}

impl ReadBarrier {
    pub fn new() -> ReadBarrier {
        let (tx, rx) = mpsc::unbounded_channel();
        ReadBarrier {
            tx,
            rx: Mutex::new(Some(rx)),
            failure: watch::Sender::new(None),
        }
    }

    pub async fn wait(&self) -> Result<(), ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .map_err(|_| ClusterError::Raft("the node is shutting down".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(RoundFailed {
                cut_off: true,
                reason,
            })) => Err(ClusterError::NoLeader(reason)),
            Ok(Err(RoundFailed { reason, .. })) => Err(ClusterError::Raft(reason)),
            Err(_) => Err(ClusterError::Raft("the node is shutting down".into())),
        }
    }

    /// Records the outcome of one read index attempt. Only a missing leader
    /// or quorum counts as a failure: a node that got its index but is slow
    /// to apply it is behind, not cut off.
    pub fn note<T>(&self, attempt: &Result<T, ClusterError>) {
        match attempt {
            Ok(_) => {
                self.failure.send_if_modified(|f| f.take().is_some());
            }
            Err(e) if e.quorum_unreachable() => {
                self.failure
                    .send_replace(Some((Instant::now(), e.to_string())));
            }
            Err(_) => {}
        }
    }

    /// Why reads should not wait for a round now: an attempt failed for
    /// want of a quorum within [`FAILURE_MEMORY`] and none succeeded since.
    pub fn recent_failure(&self) -> Option<String> {
        recent(&self.failure.borrow())
    }

    /// Resolves with the reason once an attempt fails for want of a quorum.
    pub async fn next_failure(&self) -> String {
        let mut rx = self.failure.subscribe();
        let why = match rx.wait_for(|f| recent(f).is_some()).await {
            Ok(f) => recent(&f),
            Err(_) => None,
        };
        match why {
            Some(why) => why,
            // The barrier lives as long as the node; a closed channel means
            // it is stopping, and the round itself reports that.
            None => std::future::pending().await,
        }
    }
}

fn recent(failure: &Failure) -> Option<String> {
    failure
        .as_ref()
        .filter(|(at, _)| at.elapsed() < FAILURE_MEMORY)
        .map(|(_, why)| why.clone())
}

/// Runs read rounds until the node stops.
pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    let Some(mut rx) = cluster
        .reads
        .rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            w = rx.recv() => w,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { return };
        batch.push(first);
        // Everything queued now arrived before this round starts.
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        let result = cluster
            .read_index()
            .await
            .map(|_| ())
            .map_err(|e| RoundFailed {
                cut_off: e.quorum_unreachable(),
                reason: e.to_string(),
            });
        for w in batch.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}
