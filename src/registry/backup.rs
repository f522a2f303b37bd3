//! What `berth backup` reads from a node: a snapshot of the replicated
//! state that covers every write completed before the request, and any
//! blob the metadata knows, by digest alone.

use std::io;
use std::time::{Duration, Instant};

use super::{BlobRead, Error, Freshness, Registry, Result};
use crate::cluster::types::SnapshotMeta;
use crate::oci::Digest;

/// How long a backup waits for its snapshot to be written.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(300);
/// How long one snapshot request is waited for before asking again: a
/// snapshot already being built when it was asked for may end short of the
/// writes the backup must include, and openraft ignores the request then.
const SNAPSHOT_ASK_AGAIN: Duration = Duration::from_secs(5);

/// A snapshot file opened for a backup, with its Raft metadata. Open, it
/// stays readable even if a newer snapshot replaces it meanwhile.
pub struct BackupSnapshot {
    pub meta: SnapshotMeta,
    pub file: std::fs::File,
    pub size: u64,
}

impl Registry {
    /// A snapshot of the state machine that includes every write completed
    /// anywhere before the call: this node catches up first, then has its
    /// state machine write one (the same snapshot a lagging peer gets).
    pub async fn backup_snapshot(&self) -> Result<BackupSnapshot> {
        self.cluster.linearize().await?;
        let raft = self.cluster.raft();
        let applied = raft.metrics().borrow().last_applied;
        let started = Instant::now();
        let internal = |e: &dyn std::fmt::Display| Error::Internal(e.to_string());
        loop {
            if raft.metrics().borrow().snapshot < applied {
                raft.trigger().snapshot().await.map_err(|e| internal(&e))?;
            }
            let covered = raft
                .wait(Some(SNAPSHOT_ASK_AGAIN))
                .metrics(|m| m.snapshot >= applied, "a snapshot for a backup")
                .await;
            if covered.is_ok() {
                break;
            }
            if started.elapsed() > SNAPSHOT_WAIT {
                return Err(Error::Unavailable(format!(
                    "no snapshot up to log index {} after {} s",
                    applied.map_or(0, |a| a.index),
                    SNAPSHOT_WAIT.as_secs()
                )));
            }
        }
        // A newer snapshot may replace this one before it is opened; then
        // that one serves as well.
        for _ in 0..3 {
            let snap = raft
                .get_snapshot()
                .await
                .map_err(|e| internal(&e))?
                .ok_or_else(|| Error::Internal("the snapshot just built is gone".into()))?;
            match std::fs::File::open(&snap.snapshot.path) {
                Ok(file) => {
                    let size = file.metadata().map_err(|e| internal(&e))?.len();
                    return Ok(BackupSnapshot {
                        meta: snap.meta,
                        file,
                        size,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(internal(&e)),
            }
        }
        Err(Error::Unavailable(
            "snapshots are replaced faster than one can be opened".into(),
        ))
    }

    /// A whole blob any repository holds, from this node's copy or through
    /// the verifying relay from a holder.
    pub async fn backup_blob(&self, digest: &Digest) -> Result<BlobRead> {
        let size = self
            .lookup(Freshness::ContentAddressed, |m| m.blob_known(digest))
            .await?
            .ok_or(Error::BlobUnknown)?;
        let body = self.blob_body(digest, size, None).await?;
        Ok(BlobRead {
            size,
            range: None,
            body,
        })
    }
}
