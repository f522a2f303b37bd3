//! When images were last pulled through a mirror with a size budget: each
//! node notes the manifests it serves and reports them to the cluster in
//! batches, so that eviction on the leader goes by every node's pulls at
//! the cost of one write per node every half minute.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Mirrors, Pull};
use crate::meta::evict::Pulled;
use crate::meta::Command;
use crate::oci::Digest;
use crate::registry::{Registry, Result};
use crate::storage::now_secs;

/// How often a node reports its pulls.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// Pulls per command.
const REPORT_BATCH: usize = 1000;

impl Mirrors {
    /// Notes a manifest served through `pull`'s mirror, if it has a budget.
    pub(super) fn note_pull(&self, pull: &Pull, digest: &Digest) {
        if pull.mirror.config.size_budget.is_none() {
            return;
        }
        let mut pulled = self.pulled.lock().unwrap_or_else(|p| p.into_inner());
        pulled.insert((pull.cache.clone(), digest.clone()), now_secs());
    }
}

impl Registry {
    /// Reports the pulls noted since the last report.
    pub(crate) async fn flush_pulls(&self) -> Result<()> {
        let noted: Vec<_> = {
            let mut pulled = self
                .mirrors
                .pulled
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            pulled
                .drain()
                .map(|((repo, digest), at)| (repo, digest, at))
                .collect()
        };
        for batch in noted.chunks(REPORT_BATCH) {
            let cmd = Command::Pulled(Pulled {
                pulls: batch.to_vec(),
            });
            self.write(cmd).await?;
        }
        Ok(())
    }

    /// Reports pulls every [`REPORT_EVERY`] until `stop`.
    pub(crate) async fn report_pulls(self: Arc<Self>, stop: CancellationToken) {
        if self.mirrors.budgets().is_empty() {
            return; // nothing is noted without a budget
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REPORT_EVERY) => {}
            }
            if let Err(e) = self.flush_pulls().await {
                // Only eviction's order suffers: the next pulls are noted anew.
                tracing::debug!(error = %e, "could not report pulls through mirrors");
            }
        }
    }
}
