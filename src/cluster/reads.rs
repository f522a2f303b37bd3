//! Linearizable reads, batched. Every read needs a read index obtained
//! after it arrived; one round serves every read that arrived before the
//! round began, so under load the cost is one round trip per batch, not per
//! request.
//!
//! Reads that may fall back to local state (by digest) also need to know
//! promptly when no round can succeed. The node counts as cut off once its
//! read index attempts have failed for want of a leader or a quorum for
//! [`GRACE`] with none succeeding (one slow heartbeat on a busy machine is
//! not a partition), and stays so until one succeeds, or for
//! [`FAILURE_MEMORY`] after the last failure when nothing tries again. Such
//! reads stop waiting as soon as the node is cut off, and the next ones do
//! not wait at all.

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

/// How long read index attempts must keep failing, with none succeeding,
/// before the node counts as cut off: about the time a follower waits for a
/// silent leader before it elects another (1.2 s at least).
pub const GRACE: Duration = Duration::from_millis(1000);

/// How long the last failure keeps the node cut off when no attempt follows.
/// A pull from a node without a quorum pays for a probe at most once per
/// this period; a success ends it at once.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(2);

/// Read index attempts failing for want of a quorum, since a success.
#[derive(Clone)]
struct Failing {
    since: Instant,
    last: Instant,
    why: String,
}

impl Failing {
    /// Why the node counts as cut off, if it does.
    fn cut_off(&self) -> Option<String> {
        let long = self.last.duration_since(self.since) >= GRACE;
        (long && self.last.elapsed() < FAILURE_MEMORY).then(|| self.why.clone())
    }
}

/// Reads waiting for the next round.
pub struct ReadBarrier {
    tx: mpsc::UnboundedSender<Waiter>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Waiter>>>,
    failing: watch::Sender<Option<Failing>>,
}

impl ReadBarrier {
    pub fn new() -> ReadBarrier {
        let (tx, rx) = mpsc::unbounded_channel();
        ReadBarrier {
            tx,
            rx: Mutex::new(Some(rx)),
            failing: watch::Sender::new(None),
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
                self.failing.send_if_modified(|f| f.take().is_some());
            }
            Err(e) if e.quorum_unreachable() => {
                let now = Instant::now();
                self.failing.send_modify(|f| {
                    let since = f.as_ref().map_or(now, |f| f.since);
                    *f = Some(Failing {
                        since,
                        last: now,
                        why: e.to_string(),
                    });
                });
            }
            Err(_) => {}
        }
    }

    /// Why reads should not wait for a round now, if they should not.
    pub fn cut_off(&self) -> Option<String> {
        self.failing.borrow().as_ref().and_then(Failing::cut_off)
    }

    /// Resolves with the reason once the node counts as cut off.
    pub async fn until_cut_off(&self) -> String {
        let mut rx = self.failing.subscribe();
        let why = match rx
            .wait_for(|f| f.as_ref().and_then(Failing::cut_off).is_some())
            .await
        {
            Ok(f) => f.as_ref().and_then(Failing::cut_off),
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
            .read_index_now()
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
