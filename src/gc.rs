//! Garbage collection across the cluster, online.
//!
//! A run marks what is garbage from this node's linearized metadata and
//! proposes the removals as [`Collect`] commands; applying one checks each
//! item again, so a manifest committed before the decision always wins.
//! Every node's sweeper then removes the files of collected blobs (queued
//! when the command was applied, so a restart resumes them) and, after each
//! run, orphans older than the grace, and reports what it freed through the
//! log. The leader runs collections on the schedule; an administrator can
//! run one on any node.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterError};
use crate::db::DbError;
use crate::meta::evict::EvictionPlan;
use crate::meta::gc::{GarbageBlob, GarbageManifest, GcState, RunReport, SweepReport};
use crate::meta::retention::{Retain, RetainedTag};
use crate::meta::{Collect, Command, GcReport, Rejection, StateMachine};
use crate::oci::{Digest, RepoName};
use crate::storage::{now_secs, BlobStore, Removal, StorageError, Swept};

/// Blob records read per metadata page, and so at most per command.
const BLOB_PAGE: usize = 1000;
/// Manifests, or tags, per command.
const MANIFEST_BATCH: usize = 256;
/// Repositories read per page while marking manifests.
const REPO_PAGE: usize = 100;
/// How often a sweeper looks for work.
const SWEEP_TICK: Duration = Duration::from_secs(1);
/// Files a sweeper removes between rests.
const SWEEP_STEP: usize = 100;
/// Background work rests this many times as long as each step took, so a
/// collection and its sweep take about a quarter of the time they run: none
/// of it is urgent, and the pushes and pulls beside it are.
const REST_FACTOR: u32 = 3;

/// How long to rest after a step of background work that took `busy`.
fn rest_after(busy: Duration) -> Duration {
    busy * REST_FACTOR
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcConfig {
    /// Between scheduled runs; `None`, no schedule.
    pub interval: Option<Duration>,
    /// Seconds a blob must have been unreferenced, and a manifest stored,
    /// before it is collected.
    pub grace: u64,
    /// Whether scheduled runs collect untagged manifests.
    pub untagged: bool,
}

impl Default for GcConfig {
    fn default() -> GcConfig {
        GcConfig {
            interval: Some(Duration::from_secs(3600)),
            grace: 3600,
            untagged: false,
        }
    }
}

/// What a caller asks of one run; unset fields take the node's settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RunRequest {
    #[serde(default)]
    pub dry_run: bool,
    pub grace: Option<u64>,
    pub untagged: Option<bool>,
}

/// What a dry run would remove, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub grace: u64,
    pub untagged: bool,
    /// Each is unreferenced since `unreferenced_since` (unix seconds), past
    /// the grace.
    pub blobs: Vec<GarbageBlob>,
    /// Each is untagged, past the grace, and no kept index, referrer or
    /// subject leads to it.
    pub manifests: Vec<GarbageManifest>,
    pub bytes: u64,
    /// Tags the retention rules would remove first (the manifests and blobs
    /// that frees go in later runs, once past the grace).
    #[serde(default)]
    pub retention: Vec<RetainedTag>,
    /// Mirrors past their size budget, and the cached images that go first
    /// (their blobs go in later runs, once past the grace).
    #[serde(default)]
    pub evictions: Vec<EvictionPlan>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Collected(RunReport),
    Preview(Preview),
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the collection was refused: {0}")]
    Rejected(#[from] Rejection),
}

pub struct Collector {
    meta: StateMachine,
    cluster: Arc<Cluster>,
    blobs: BlobStore,
    config: GcConfig,
    /// Size budgets of mirror namespaces, in bytes.
    budgets: Vec<(String, u64)>,
    /// One run at a time on this node.
    running: tokio::sync::Mutex<()>,
}

impl Collector {
    pub fn new(
        meta: StateMachine,
        cluster: Arc<Cluster>,
        blobs: BlobStore,
        config: GcConfig,
        budgets: Vec<(String, u64)>,
    ) -> Collector {
        Collector {
            meta,
            cluster,
            blobs,
            config,
            budgets,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The latest run and every node's sweep, as fresh as a write.
    pub async fn status(&self) -> Result<GcState, GcError> {
        self.cluster.linearize().await?;
        Ok(self.meta.gc_state()?)
    }

    /// Runs one collection, or with `dry_run` lists what it would remove.
    pub async fn run(&self, req: &RunRequest) -> Result<Outcome, GcError> {
        let _one = self.running.lock().await;
        self.cluster.linearize().await?;
        let grace = req.grace.unwrap_or(self.config.grace);
        let untagged = req.untagged.unwrap_or(self.config.untagged);
        let now = now_secs();
        if req.dry_run {
            return Ok(Outcome::Preview(self.preview(now, grace, untagged)?));
        }
        let mut report = RunReport {
            id: now_millis(),
            node: self.cluster.id(),
            started: now,
            grace,
            untagged,
            ..RunReport::default()
        };
        tracing::info!(grace, untagged, "garbage collection started");
        self.write(Command::GcReport(GcReport::Run(report.clone())))
            .await?;
        let result = match self.retain(now).await {
            Ok(()) => match self.evict(now).await {
                Ok(()) => self.collect(&mut report, now).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        report.finished = Some(now_secs());
        report.error = result.as_ref().err().map(|e| e.to_string());
        // The report is what tells the sweepers to look for orphans.
        self.write(Command::GcReport(GcReport::Run(report.clone())))
            .await?;
        result?;
        tracing::info!(
            blobs = report.blobs,
            manifests = report.manifests,
            bytes = report.bytes,
            "garbage collection finished"
        );
        Ok(Outcome::Collected(report))
    }

    fn preview(&self, now: u64, grace: u64, untagged: bool) -> Result<Preview, GcError> {
        let mut preview = Preview {
            grace,
            untagged,
            retention: self.meta.retention_plan_in(None, None, now)?.remove,
            evictions: self.eviction_plans()?,
            ..Preview::default()
        };
        if untagged {
            self.each_repo(|repo| {
                let found = self.meta.garbage_manifests(repo, now, grace)?;
                preview.manifests.extend(found);
                Ok(())
            })?;
        }
        let mut after = None;
        loop {
            let (found, last) = self
                .meta
                .garbage_blobs(after.as_ref(), BLOB_PAGE, now, grace)?;
            preview.bytes += found.iter().map(|b| b.size).sum::<u64>();
            preview.blobs.extend(found);
            match last {
                Some(last) => after = Some(last),
                None => return Ok(preview),
            }
        }
    }

    /// Applies the retention rules: removes the tags they do not keep, and
    /// the manifests that leaves with no tag and no index.
    async fn retain(&self, now: u64) -> Result<(), GcError> {
        let plan = self.meta.retention_plan_in(None, None, now)?;
        if plan.remove.is_empty() {
            return Ok(());
        }
        let mut removed = 0usize;
        for batch in plan.remove.chunks(MANIFEST_BATCH) {
            let tags = batch
                .iter()
                .map(|t| (t.repository.clone(), t.tag.clone(), t.digest.clone()))
                .collect();
            self.write(Command::Retain(Retain { tags, at: now }))
                .await?;
            for t in batch {
                if self.meta.tag(&t.repository, &t.tag)?.as_ref() != Some(&t.digest) {
                    removed += 1;
                    tracing::info!(target: "berth::audit", repository = %t.repository, tag = %t.tag, digest = %t.digest, "retention removed a tag");
                }
            }
        }
        tracing::info!(
            tags = removed,
            protected = plan.protected.len(),
            "retention rules applied"
        );
        Ok(())
    }

    /// The eviction plans of the mirrors past their budget.
    fn eviction_plans(&self) -> Result<Vec<EvictionPlan>, GcError> {
        let mut plans = Vec::new();
        for (namespace, budget) in &self.budgets {
            let plan = self.meta.eviction_plan(namespace, *budget)?;
            if !plan.evict.is_empty() {
                plans.push(plan);
            }
        }
        Ok(plans)
    }

    /// Brings each mirror within its size budget: removes the cached images
    /// pulled least recently. Their blobs become garbage, collected like
    /// any other once past the grace.
    async fn evict(&self, now: u64) -> Result<(), GcError> {
        for plan in self.eviction_plans()? {
            for e in &plan.evict {
                let cmd = Command::RemoveManifest {
                    repo: e.repository.clone(),
                    digest: e.digest.clone(),
                    at: now,
                };
                match self.write(cmd).await {
                    Ok(()) => {
                        tracing::info!(target: "berth::audit", repository = %e.repository, digest = %e.digest, last_pulled = e.last_pulled, "mirror budget evicted a cached manifest")
                    }
                    // Removed meanwhile: nothing to evict.
                    Err(GcError::Rejected(Rejection::ManifestUnknown)) => {}
                    Err(e) => return Err(e),
                }
            }
            tracing::info!(
                mirror = %plan.namespace,
                budget = plan.budget,
                bytes = plan.bytes,
                bytes_after = plan.bytes_after,
                manifests = plan.evict.len(),
                "mirror brought within its size budget"
            );
        }
        Ok(())
    }

    /// Manifests first: the blobs they free start their grace when they go.
    async fn collect(&self, report: &mut RunReport, now: u64) -> Result<(), GcError> {
        let grace = report.grace;
        if report.untagged {
            let mut doomed = Vec::new();
            self.each_repo(|repo| {
                doomed.extend(self.meta.garbage_manifests(repo, now, grace)?);
                Ok(())
            })?;
            for batch in doomed.chunks(MANIFEST_BATCH) {
                let manifests: Vec<_> = batch
                    .iter()
                    .map(|m| (m.repository.clone(), m.digest.clone()))
                    .collect();
                self.propose(Vec::new(), manifests.clone(), grace, now)
                    .await?;
                for (repo, digest) in &manifests {
                    if self.meta.manifest_refs(repo, digest)?.is_none() {
                        report.manifests += 1;
                    }
                }
            }
        }
        let now = now_secs().max(now);
        let mut after = None;
        loop {
            let (found, last) = self
                .meta
                .garbage_blobs(after.as_ref(), BLOB_PAGE, now, grace)?;
            if !found.is_empty() {
                let digests = found.iter().map(|b| b.digest.clone()).collect();
                self.propose(digests, Vec::new(), grace, now).await?;
                for blob in &found {
                    if self.meta.blob_record(&blob.digest)?.is_none() {
                        report.blobs += 1;
                        report.bytes += blob.size;
                    }
                }
            }
            match last {
                Some(last) => after = Some(last),
                None => return Ok(()),
            }
        }
    }

    /// Proposes one decision, then rests in proportion to what it cost.
    async fn propose(
        &self,
        blobs: Vec<Digest>,
        manifests: Vec<(RepoName, Digest)>,
        grace: u64,
        at: u64,
    ) -> Result<(), GcError> {
        let started = std::time::Instant::now();
        let collect = Collect {
            blobs,
            manifests,
            grace,
            at,
        };
        self.write(Command::Collect(collect)).await?;
        tokio::time::sleep(rest_after(started.elapsed())).await;
        Ok(())
    }

    async fn write(&self, cmd: Command) -> Result<(), GcError> {
        Ok(self.cluster.write(cmd).await??)
    }

    fn each_repo(
        &self,
        mut f: impl FnMut(&RepoName) -> Result<(), GcError>,
    ) -> Result<(), GcError> {
        let mut last: Option<String> = None;
        loop {
            let page = self.meta.repositories(last.as_deref(), REPO_PAGE)?;
            for name in &page.items {
                if let Ok(repo) = name.parse::<RepoName>() {
                    f(&repo)?;
                }
            }
            last = page.items.last().cloned();
            if !page.more {
                return Ok(());
            }
        }
    }

    /// Runs a collection every interval while this node leads.
    pub async fn schedule(self: Arc<Self>, stop: CancellationToken) {
        let Some(interval) = self.config.interval else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            if self.cluster.status().leader_id != Some(self.cluster.id()) {
                continue;
            }
            if let Err(e) = self.run(&RunRequest::default()).await {
                tracing::warn!(error = %e, "scheduled garbage collection failed; trying again next interval");
            }
        }
    }

    /// Removes this node's files of collected blobs as collections are
    /// applied, and orphans once each run has finished; reports what it
    /// freed for the latest run, through the log, whenever that changes.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        let mut run: Option<u64> = None;
        let mut orphans_done = false;
        let mut freed = Swept::default();
        let mut unreported = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_TICK) => {}
                _ = stop.cancelled() => return,
            }
            // Drained first, then attributed to the latest run: a file is
            // queued by a collection applied after its run's start report,
            // so the run read afterwards is the one that freed it.
            let this = self.clone();
            let halt = stop.clone();
            let drained = blocking("collected blobs", move || this.drain_queue(&halt)).await;
            let last = match self.meta.gc_state() {
                Ok(state) => state.last_run,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the last collection");
                    None
                }
            };
            if let Some(last) = &last {
                if run != Some(last.id) {
                    (run, orphans_done, freed, unreported) =
                        (Some(last.id), false, Swept::default(), true);
                }
            }
            if let Some(swept) = drained {
                unreported |= swept.files > 0;
                freed.add(swept);
            }
            if let Some(last) = last.filter(|r| r.finished.is_some() && !orphans_done) {
                let this = self.clone();
                let halt = stop.clone();
                let sweep = move || this.sweep_orphans(last.grace, &halt);
                if let Some(swept) = blocking("orphan blob files", sweep).await {
                    freed.add(swept);
                    orphans_done = true;
                    unreported = true;
                }
            }
            let Some(run) = run.filter(|_| unreported) else {
                continue;
            };
            let report = SweepReport {
                node: self.cluster.id(),
                run,
                files: freed.files,
                bytes: freed.bytes,
                pending: self.meta.sweep_pending().unwrap_or(0),
                at: now_secs(),
            };
            match self.write(Command::GcReport(GcReport::Swept(report))).await {
                Ok(()) => {
                    tracing::info!(
                        files = freed.files,
                        bytes = freed.bytes,
                        "swept blob files after a collection"
                    );
                    unreported = false;
                }
                Err(e) => tracing::warn!(error = %e, "cannot report the sweep; retrying"),
            }
        }
    }

    /// Removes the files of blobs collections removed. A file pinned as
    /// just arrived stays queued, and is looked at again next time.
    /// Stops early when `stop` is cancelled (the queue keeps the rest).
    fn drain_queue(&self, stop: &CancellationToken) -> Result<Swept, StorageError> {
        let mut swept = Swept::default();
        let mut after: Option<Digest> = None;
        while !stop.is_cancelled() {
            let started = std::time::Instant::now();
            let queued = self.meta.sweep_queue(after.as_ref(), SWEEP_STEP)?;
            let Some(last) = queued.last() else {
                return Ok(swept);
            };
            after = Some(last.clone());
            let mut done = Vec::new();
            for digest in queued {
                // Linked again since, it stays.
                let named = || Ok(self.meta.blob_record(&digest)?.is_some());
                let removal = self.blobs.remove_unless(&digest, named)?;
                swept.count(removal);
                if removal != Removal::Pinned {
                    done.push(digest);
                }
            }
            self.meta.unqueue_sweeps(&done)?;
            std::thread::sleep(rest_after(started.elapsed()));
        }
        Ok(swept)
    }

    /// Removes files older than `grace` that no metadata names: copies that
    /// arrived after their blob was collected, or that a crash left.
    /// Stops early when `stop` is cancelled; the next run looks again.
    fn sweep_orphans(&self, grace: u64, stop: &CancellationToken) -> Result<Swept, StorageError> {
        let now = now_secs();
        let mut swept = Swept::default();
        let mut after = None;
        loop {
            if stop.is_cancelled() {
                return Ok(swept);
            }
            let started = std::time::Instant::now();
            let page = self.blobs.local_page(after.as_ref(), BLOB_PAGE)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (digest, local) in page {
                if local.first_seen.saturating_add(grace) > now {
                    continue;
                }
                let named = || Ok(self.meta.blob_record(&digest)?.is_some());
                swept.count(self.blobs.remove_unless(&digest, named)?);
            }
            std::thread::sleep(rest_after(started.elapsed()));
        }
        for found in self.blobs.unindexed()? {
            if self.meta.blob_record(&found.digest)?.is_some() {
                self.blobs.reindex(&found)?;
                continue;
            }
            let age = found.modified.elapsed().unwrap_or_default().as_secs();
            if age >= grace {
                swept.count(self.blobs.remove_unless(&found.digest, || Ok(false))?);
            }
        }
        Ok(swept)
    }
}

/// Runs a sweep off the async runtime; logs and returns `None` if it fails.
async fn blocking(
    what: &'static str,
    sweep: impl FnOnce() -> Result<Swept, StorageError> + Send + 'static,
) -> Option<Swept> {
    match tokio::task::spawn_blocking(sweep).await {
        Ok(Ok(swept)) => Some(swept),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "sweeping {what} failed");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "sweeping {what} failed");
            None
        }
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
