//! Scrubbing as a node runs it: a pass over every local blob on a schedule
//! (`--scrub-interval`), and for every copy quarantined, by a pass or by a
//! client's read, a good copy fetched from another holder through the
//! verifying relay.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Registry;
use crate::cluster::status::ScrubReport;
use crate::oci::Digest;

/// Pause before a restore that failed is tried again.
const RETRY: Duration = Duration::from_secs(10);
/// Longest sleep of the restore loop with nothing to do.
const IDLE: Duration = Duration::from_secs(3600);

/// Scrub settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Pause between the end of a pass and the start of the next; `None`:
    /// no passes (copies that fail a client's read are still restored).
    pub interval: Option<Duration>,
    /// Largest rate a pass reads at, in bytes per second (0: no cap).
    pub bandwidth: u64,
}

/// Figures for status and metrics.
#[derive(Clone, Default)]
pub struct ScrubStats(Arc<Mutex<ScrubReport>>);

impl ScrubStats {
    /// The figures with the quarantine's counts, or `None` while there is
    /// nothing to say.
    pub fn get(&self, corrupt: &crate::storage::scrub::Corrupt) -> Option<ScrubReport> {
        let mut r = self.lock().clone();
        r.corrupt = corrupt.found();
        r.waiting = corrupt.waiting().len() as u64;
        (r != ScrubReport::default()).then_some(r)
    }

    fn update(&self, change: impl FnOnce(&mut ScrubReport)) {
        change(&mut self.lock());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScrubReport> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Registry {
    /// Scrub passes, when configured, and restores; run until `stop`.
    pub fn scrub(
        self: &Arc<Self>,
        config: ScrubConfig,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let restores = tokio::spawn(self.clone().restore_loop(stop.clone()));
        let this = self.clone();
        async move {
            if let Some(interval) = config.interval {
                tracing::info!(
                    ?interval,
                    bandwidth = config.bandwidth,
                    "scrubbing local blobs"
                );
                this.pass_loop(interval, config.bandwidth, stop).await;
            }
            let _ = restores.await;
        }
    }

    async fn pass_loop(&self, interval: Duration, bandwidth: u64, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            let started = Instant::now();
            match self.blobs.scrub(bandwidth, &stop).await {
                Ok(pass) if !stop.is_cancelled() => {
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(
                        blobs = pass.blobs,
                        bytes = pass.bytes,
                        corrupt = pass.corrupt,
                        seconds = secs,
                        "scrub pass finished"
                    );
                    self.scrub_stats.update(|r| {
                        r.passes += 1;
                        r.last_pass_end = Some(crate::storage::now_secs());
                        r.last_pass_blobs = pass.blobs;
                        r.last_pass_bytes = pass.bytes;
                        r.last_pass_rate = if secs > 0.0 {
                            pass.bytes as f64 / secs
                        } else {
                            0.0
                        };
                    });
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "scrub pass failed; trying again next interval")
                }
            }
        }
    }

    async fn restore_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let mut failed = false;
            for digest in self.blobs.corrupt().waiting() {
                match self.restore(&digest).await {
                    Ok(()) => {
                        tracing::info!(%digest, "restored a good copy of a quarantined blob");
                        self.blobs.corrupt().restored(&digest);
                        self.scrub_stats.update(|r| r.restored += 1);
                    }
                    Err(e) => {
                        tracing::warn!(%digest, error = %e, "no good copy of a quarantined blob yet; trying again");
                        failed = true;
                    }
                }
            }
            let pause = if failed { RETRY } else { IDLE };
            tokio::select! {
                _ = self.blobs.corrupt().arrived() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Fetches a good copy of `digest` from another holder and keeps it.
    async fn restore(&self, digest: &Digest) -> Result<(), String> {
        let Some(size) = self.meta.blob_known(digest).map_err(|e| e.to_string())? else {
            // No repository holds it any more: nothing to restore.
            return Ok(());
        };
        if self
            .blobs
            .stat(digest)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(());
        }
        let holders = self.meta.holders(digest).map_err(|e| e.to_string())?;
        let mut stream = self
            .replicator
            .relay(digest, size, None, holders)
            .await
            .map_err(|e| e.to_string())?
            .body;
        while let Some(chunk) = stream.next().await {
            chunk.map_err(|e| e.to_string())?;
        }
        match self.blobs.stat(digest).map_err(|e| e.to_string())? {
            Some(_) => Ok(()),
            None => Err("the relayed copy was not kept".into()),
        }
    }
}
