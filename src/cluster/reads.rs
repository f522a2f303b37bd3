//! Linearizable reads, batched. Every read needs a read index obtained
//! after it arrived; one round serves every read that arrived before the
//! round began, so under load the cost is one round trip per batch, not per
//! request.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError};

type Waiter = oneshot::Sender<Result<(), String>>;

/// Reads waiting for the next round.
pub struct ReadBarrier {
    tx: mpsc::UnboundedSender<Waiter>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Waiter>>>,
}

impl ReadBarrier {
    pub fn new() -> ReadBarrier {
        let (tx, rx) = mpsc::unbounded_channel();
        ReadBarrier {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    pub async fn wait(&self) -> Result<(), ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .map_err(|_| ClusterError::Raft("the node is shutting down".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(ClusterError::NoLeader(reason)),
            Err(_) => Err(ClusterError::Raft("the node is shutting down".into())),
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
            .read_index()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        for w in batch.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}
