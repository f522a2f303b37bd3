//! Background repair: every node checks every blob against the replication
//! factor and fetches the blobs it should hold but does not. The choice is
//! the same rendezvous ranking on every node, so no coordination is needed:
//! after a member is lost or removed, the next-ranked nodes pull the missing
//! copies, and a new empty node pulls its share.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{placement, Replicator};
use crate::cluster::status::RepairReport;
use crate::meta::StateMachine;
use crate::oci::Digest;

/// Blobs examined per metadata read.
const PAGE: usize = 1000;

/// Repair settings.
#[derive(Clone, Copy, Debug)]
pub struct RepairConfig {
    /// Pause between rounds.
    pub interval: Duration,
    /// Largest rate this node copies at, in bytes per second (0: no cap).
    pub bandwidth: u64,
}

/// The last round's figures, for status.
#[derive(Clone, Default)]
pub struct RepairStats(Arc<Mutex<Option<RepairReport>>>);

impl RepairStats {
    pub fn get(&self) -> Option<RepairReport> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, report: RepairReport) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }
}

pub async fn run(
    replicator: Replicator,
    meta: StateMachine,
    config: RepairConfig,
    stats: RepairStats,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.cancelled() => return,
        }
        match round(&replicator, &meta, config, &stop).await {
            Ok(report) => stats.set(report),
            Err(e) => tracing::warn!(error = %e, "blob repair round failed"),
        }
    }
}

/// A blob this node should copy, and from whom.
struct Missing {
    digest: Digest,
    size: u64,
    holders: Vec<u64>,
}

async fn round(
    replicator: &Replicator,
    meta: &StateMachine,
    config: RepairConfig,
    stop: &CancellationToken,
) -> Result<RepairReport, crate::db::DbError> {
    let me = replicator.cluster.id();
    let members: Vec<u64> = replicator
        .cluster
        .members()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    if !members.contains(&me) {
        return Ok(RepairReport::default());
    }
    let mut report = RepairReport::default();
    let mut mine = Vec::new();
    let mut unrecorded = Vec::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = meta.blobs_page(after.as_ref(), PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (digest, size) in page {
            let holders = meta.holders(&digest)?;
            // A copy that arrived but was never recorded (the record was
            // lost to a leader change, say) is recorded now, not fetched again.
            if !holders.contains(&me) && replicator.holds(&digest) {
                unrecorded.push(digest.clone());
            }
            // A copy recorded here that this node no longer has (it was
            // quarantined, or its file lost) is no copy: fetch it back,
            // whatever the ranking, since the others count it as held.
            let held_here = replicator.holds(&digest);
            let live: Vec<u64> = holders
                .iter()
                .copied()
                .filter(|h| members.contains(h) && (*h != me || held_here))
                .collect();
            let want = placement::copies(replicator.factor, members.len());
            if live.is_empty() {
                report.unavailable += 1;
                continue;
            }
            if holders.contains(&me) && !held_here {
                report.under_replicated += 1;
                report.bytes_to_copy += size;
                mine.push(Missing {
                    digest,
                    size,
                    holders: live,
                });
                continue;
            }
            if live.len() >= want {
                continue;
            }
            let missing = (want - live.len()) as u64;
            report.under_replicated += 1;
            report.bytes_to_copy += missing * size;
            // The best-ranked members without a copy fetch one each.
            let ranked = placement::ranked(&digest, &members);
            let fetchers: Vec<u64> = ranked
                .into_iter()
                .filter(|m| !live.contains(m))
                .take(missing as usize)
                .collect();
            if fetchers.contains(&me) && !replicator.holds(&digest) {
                mine.push(Missing {
                    digest,
                    size,
                    holders: live,
                });
            }
        }
    }
    for digest in unrecorded {
        tracing::info!(%digest, "recording a blob copy this node holds");
        super::record_holders(replicator.cluster.clone(), digest, vec![me]).await;
    }
    let started = Instant::now();
    let mut copied = 0u64;
    for blob in mine {
        if stop.is_cancelled() {
            break;
        }
        match copy(replicator, &blob, config.bandwidth, started, copied).await {
            Ok(n) => {
                copied += n;
                tracing::info!(digest = %blob.digest, bytes = n, "repaired a missing blob copy");
            }
            Err(e) => {
                tracing::warn!(digest = %blob.digest, error = %e, "blob repair failed; retrying next round")
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    report.copy_rate = if secs > 0.0 {
        copied as f64 / secs
    } else {
        0.0
    };
    Ok(report)
}

/// Copies one blob through the verifying relay, at most `bandwidth` bytes
/// per second over the round so far.
async fn copy(
    replicator: &Replicator,
    blob: &Missing,
    bandwidth: u64,
    round_started: Instant,
    copied_before: u64,
) -> Result<u64, String> {
    if !replicator.may_keep(blob.size) {
        // The relay would pass it on without keeping it: nothing to fetch.
        return Err(format!(
            "{} bytes is more than this node's blob size cap",
            blob.size
        ));
    }
    let mut stream = replicator
        .relay(&blob.digest, blob.size, None, blob.holders.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut copied = 0u64;
    while let Some(chunk) = stream.next().await {
        copied += chunk.map_err(|e| e.to_string())?.len() as u64;
        if bandwidth > 0 {
            let due = Duration::from_secs_f64((copied_before + copied) as f64 / bandwidth as f64);
            if let Some(wait) = due.checked_sub(round_started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    if copied != blob.size {
        return Err(format!("copied {copied} of {} bytes", blob.size));
    }
    Ok(copied)
}
