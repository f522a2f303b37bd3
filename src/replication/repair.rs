//! Background repair: every node checks blobs against the replication
//! factor and fetches the blobs it should hold but does not. The choice is
//! the same rendezvous ranking on every node, so no coordination is needed:
//! after a member is lost or removed, the next-ranked nodes pull the missing
//! copies, and a new empty node pulls its share.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{placement, Pace, Replicator};
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
    let mut since = Passes::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.cancelled() => return,
        }
        match round(&replicator, &meta, config, &stop, &mut since).await {
            Ok(report) => stats.set(report),
            Err(e) => {
                since.settled = false;
                tracing::warn!(error = %e, "blob repair round failed")
            }
        }
    }
}

/// A round on a settled cluster reads only the blobs whose holders the log
/// changed since the round before ([`crate::cluster::changes`]): an idle
/// round costs nothing per blob. Every blob is read when that would miss
/// something: the first round, after the members changed, while anything
/// is left to repair, and every [`FULL_PASS_EVERY`], which also finds copies
/// lost from disk that nothing reported.
const FULL_PASS_EVERY: Duration = Duration::from_secs(3600);

/// What the rounds so far established.
#[derive(Default)]
struct Passes {
    /// The members at the last round.
    members: Vec<u64>,
    /// When the last pass over every blob began.
    last_full: Option<Instant>,
    /// Whether the last round found every blob at its factor and recorded,
    /// and copied everything it should have.
    settled: bool,
}

impl Passes {
    fn need_full(&self, members: &[u64]) -> bool {
        !self.settled
            || self.members != members
            || self
                .last_full
                .is_none_or(|t| t.elapsed() >= FULL_PASS_EVERY)
    }
}

/// A blob this node should copy, and from whom.
struct Missing {
    digest: Digest,
    size: u64,
    holders: Vec<u64>,
}

/// What one round found, blob by blob.
struct Findings<'a> {
    replicator: &'a Replicator,
    meta: &'a StateMachine,
    me: u64,
    members: &'a [u64],
    report: RepairReport,
    mine: Vec<Missing>,
    unrecorded: Vec<Digest>,
}

impl Findings<'_> {
    /// Checks one blob against the replication factor.
    fn examine(&mut self, digest: Digest, size: u64) -> Result<(), crate::db::DbError> {
        let (me, replicator) = (self.me, self.replicator);
        self.report.examined += 1;
        let holders = self.meta.holders(&digest)?;
        let held_here = replicator.holds(&digest);
        // A copy that arrived but was never recorded (the record was lost
        // to a leader change, say) is recorded now, not fetched again.
        if !holders.contains(&me) && held_here {
            self.unrecorded.push(digest.clone());
        }
        // A copy recorded here that this node no longer has (it was
        // quarantined, or its file lost) is no copy: fetch it back,
        // whatever the ranking, since the others count it as held.
        let live: Vec<u64> = holders
            .iter()
            .copied()
            .filter(|h| self.members.contains(h) && (*h != me || held_here))
            .collect();
        let want = placement::copies(replicator.factor, self.members.len());
        if live.is_empty() {
            self.report.unavailable += 1;
            return Ok(());
        }
        if holders.contains(&me) && !held_here {
            self.report.under_replicated += 1;
            self.report.bytes_to_copy += size;
            self.mine.push(Missing {
                digest,
                size,
                holders: live,
            });
            return Ok(());
        }
        if live.len() >= want {
            return Ok(());
        }
        let missing = (want - live.len()) as u64;
        self.report.under_replicated += 1;
        self.report.bytes_to_copy += missing * size;
        // The best-ranked members without a copy fetch one each.
        let fetchers: Vec<u64> = placement::ranked(&digest, self.members)
            .into_iter()
            .filter(|m| !live.contains(m))
            .take(missing as usize)
            .collect();
        if fetchers.contains(&me) && !held_here {
            self.mine.push(Missing {
                digest,
                size,
                holders: live,
            });
        }
        Ok(())
    }
}

async fn round(
    replicator: &Replicator,
    meta: &StateMachine,
    config: RepairConfig,
    stop: &CancellationToken,
    since: &mut Passes,
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
    // Taken first: a change applied while this round reads is seen by the
    // next one.
    let changed = replicator.cluster.blob_changes().take();
    let full = changed.is_none() || since.need_full(&members);
    let mut found = Findings {
        replicator,
        meta,
        me,
        members: &members,
        report: RepairReport {
            full_pass: full,
            ..RepairReport::default()
        },
        mine: Vec::new(),
        unrecorded: Vec::new(),
    };
    if full {
        since.last_full = Some(Instant::now());
        let mut after: Option<Digest> = None;
        loop {
            let page = meta.blobs_page(after.as_ref(), PAGE)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (digest, size) in page {
                found.examine(digest, size)?;
            }
        }
    } else {
        for digest in changed.unwrap_or_default() {
            // A blob removed since its change needs nothing.
            if let Some((size, _)) = meta.blob_record(&digest)? {
                found.examine(digest, size)?;
            }
        }
    }
    let Findings {
        mut report,
        mine,
        unrecorded,
        ..
    } = found;
    since.members = members;
    since.settled =
        report.under_replicated == 0 && report.unavailable == 0 && unrecorded.is_empty();
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
    // The pace holds the fetch itself, which clients may be following.
    let pace = Pace::new(bandwidth, round_started, copied_before);
    let mut stream = replicator
        .relay_paced(
            &blob.digest,
            blob.size,
            None,
            blob.holders.clone(),
            Some(pace),
        )
        .await
        .map_err(|e| e.to_string())?
        .body;
    let mut copied = 0u64;
    while let Some(chunk) = stream.next().await {
        copied += chunk.map_err(|e| e.to_string())?.len() as u64;
    }
    if copied != blob.size {
        return Err(format!("copied {copied} of {} bytes", blob.size));
    }
    Ok(copied)
}
