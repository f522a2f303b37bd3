//! What a metrics scrape reads from this node: consensus as the cluster
//! status reports it, repair's last round, the database's estimates and the
//! data directory's file system. Cheap enough for every scrape: no scan.

use super::Registry;
use crate::db::Cf;
use crate::metrics::{GcFigures, Metrics, Snapshot, State};

impl State for Registry {
    fn snapshot(&self) -> Snapshot {
        let status = self.cluster_status();
        let leads = status.leader_id == Some(status.node_id);
        let repair = status.repair.clone().unwrap_or_default();
        let (disk_free, disk_total) = disk_space(&self.data_dir).unwrap_or((0, 0));
        Snapshot {
            term: status.term,
            is_leader: leads,
            has_leader: status.leader_id.is_some(),
            last_log_index: status.last_log_index.unwrap_or(0),
            commit_index: status.committed_index.unwrap_or(0),
            applied_index: status.applied_index.unwrap_or(0),
            members: status.members.iter().filter(|m| m.voter).count() as u64,
            proposed: self.cluster.proposed(),
            lags: match leads {
                true => status
                    .members
                    .iter()
                    .filter_map(|m| Some((m.node_id, m.lag?)))
                    .collect(),
                false => Vec::new(),
            },
            under_replicated: repair.under_replicated,
            unavailable: repair.unavailable,
            bytes_to_copy: repair.bytes_to_copy,
            repair_rate: repair.copy_rate,
            scrub: status.scrub.clone().unwrap_or_default(),
            local_blobs: self.db.estimate_keys(Cf::LocalBlobs),
            local_blob_bytes: self.local_bytes.load(std::sync::atomic::Ordering::Relaxed),
            uploads: self.db.estimate_keys(Cf::Uploads),
            disk_free,
            disk_total,
            webhook_endpoints: self.meta.endpoints().map_or(0, |e| e.len() as u64),
            gc: self.gc_figures(),
            mirrors: self.mirror_figures(),
        }
    }
}

impl Registry {
    /// The last collection and this node's sweep of it: a point read and a
    /// scan of one report per node.
    fn gc_figures(&self) -> Option<GcFigures> {
        let state = self.meta.gc_state().ok()?;
        let run = state.last_run?;
        // Each node keeps one report: its latest sweep.
        let mine = state.nodes.iter().find(|n| n.node == self.node_id());
        Some(GcFigures {
            finished: run.finished.unwrap_or(0),
            blobs: run.blobs,
            manifests: run.manifests,
            bytes: run.bytes,
            swept_bytes: mine.filter(|s| s.run == run.id).map_or(0, |s| s.bytes),
            pending_files: mine.map_or(0, |s| s.pending),
        })
    }
}

/// How often the bytes of local blobs are added up again.
const TALLY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Registry {
    /// Adds up the bytes of this node's blobs every minute until `stop`,
    /// for scrapes to read: a walk of the local index is too slow for each
    /// scrape of a node holding many blobs.
    pub fn tally_local_blobs(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let blobs = self.blobs.clone();
        let tally = self.local_bytes.clone();
        async move {
            let mut tick = tokio::time::interval(TALLY_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let blobs = blobs.clone();
                match tokio::task::spawn_blocking(move || blobs.tally()).await {
                    Ok(Ok((_, bytes))) => tally.store(bytes, std::sync::atomic::Ordering::Relaxed),
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not add up local blob bytes"),
                    Err(e) => tracing::warn!(error = %e, "the local blob tally failed"),
                }
            }
        }
    }

    /// This node's metric handles.
    pub fn metrics(&self) -> &std::sync::Arc<Metrics> {
        &self.metrics
    }
}

/// Free and total bytes of the file system holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some((stat.f_bavail as u64 * block, stat.f_blocks as u64 * block))
}
