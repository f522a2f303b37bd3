//! Scrape-time metrics: what is state rather than events (Raft's term and
//! indexes, replication, storage, collections, mirrors), read from a
//! [`State`] source when Prometheus asks, so nothing has to keep it up to
//! date.

use std::sync::{OnceLock, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What the state collector reads when scraped.
pub trait State: Send + Sync {
    fn snapshot(&self) -> Snapshot;
}

/// The node's state at a scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub term: u64,
    pub is_leader: bool,
    pub has_leader: bool,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub members: u64,
    /// Entries this node proposed as leader, and the commands they held.
    pub proposed: (u64, u64),
    /// (member id, entries behind the leader's log), as the leader sees it.
    pub lags: Vec<(u64, u64)>,
    pub under_replicated: u64,
    pub unavailable: u64,
    pub bytes_to_copy: u64,
    pub repair_rate: f64,
    /// Scrubbing on this node since it started.
    pub scrub: crate::cluster::status::ScrubReport,
    pub local_blobs: u64,
    /// Bytes of the blobs this node stores, as last added up.
    pub local_blob_bytes: u64,
    pub uploads: u64,
    pub disk_free: u64,
    pub disk_total: u64,
    pub webhook_endpoints: u64,
    /// The last garbage collection, once there was one.
    pub gc: Option<GcFigures>,
    pub mirrors: Vec<MirrorFigures>,
}

/// The last collection and this node's sweep of it.
#[derive(Debug, Default)]
pub struct GcFigures {
    /// Unix seconds; 0 while it runs.
    pub finished: u64,
    pub blobs: u64,
    pub manifests: u64,
    pub bytes: u64,
    /// Bytes this node's sweep freed for that run.
    pub swept_bytes: u64,
    /// Files of collected blobs this node has still to remove.
    pub pending_files: u64,
}

/// One mirror's counters on this node since it started.
#[derive(Debug, Default)]
pub struct MirrorFigures {
    pub name: String,
    pub hits: u64,
    pub misses: u64,
    pub upstream_bytes: u64,
}

/// Scrape-time gauges, from whatever [`Metrics::set_state`] was given.
#[derive(Debug, Default)]
pub(super) struct StateCollector {
    pub(super) source: OnceLock<WeakState>,
}

pub(super) struct WeakState(pub(super) Weak<dyn State>);

impl std::fmt::Debug for WeakState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(metric)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(metric)
}

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.source.get().and_then(|s| s.0.upgrade()) else {
            return Ok(());
        };
        let s = source.snapshot();
        gauge(&mut e, "raft_term", "The current Raft term", s.term as i64)?;
        gauge(
            &mut e,
            "raft_is_leader",
            "1 if this node leads",
            i64::from(s.is_leader),
        )?;
        gauge(
            &mut e,
            "raft_has_leader",
            "1 if this node knows a leader",
            i64::from(s.has_leader),
        )?;
        gauge(
            &mut e,
            "raft_last_log_index",
            "Index of the last entry in this node's log",
            s.last_log_index as i64,
        )?;
        gauge(
            &mut e,
            "raft_commit_index",
            "Highest index this node knows committed",
            s.commit_index as i64,
        )?;
        gauge(
            &mut e,
            "raft_applied_index",
            "Highest index this node applied",
            s.applied_index as i64,
        )?;
        counter(
            &mut e,
            "raft_proposed_entries",
            "Log entries this node proposed as leader",
            s.proposed.0,
        )?;
        counter(
            &mut e,
            "raft_proposed_commands",
            "Commands in the log entries this node proposed: concurrent writes share an entry",
            s.proposed.1,
        )?;
        gauge(
            &mut e,
            "raft_members",
            "Voters in the membership",
            s.members as i64,
        )?;
        {
            #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
            struct Member {
                member: String,
            }
            let lag = ConstGauge::new(0i64);
            let mut family = e.encode_descriptor(
                "raft_follower_lag_entries",
                "Entries each member is behind the leader's log (on the leader only)",
                None,
                lag.metric_type(),
            )?;
            for (id, behind) in &s.lags {
                let labels = Member {
                    member: format!("{id:016x}"),
                };
                ConstGauge::new(*behind as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut e,
            "replication_under_replicated_blobs",
            "Blobs held by fewer live members than the replication factor wants",
            s.under_replicated as i64,
        )?;
        gauge(
            &mut e,
            "replication_unavailable_blobs",
            "Blobs no live member holds",
            s.unavailable as i64,
        )?;
        gauge(
            &mut e,
            "replication_bytes_to_copy",
            "Bytes repair still has to copy",
            s.bytes_to_copy as i64,
        )?;
        gauge(
            &mut e,
            "replication_repair_rate_bytes_per_second",
            "Bytes a second this node copied in its last repair round",
            s.repair_rate,
        )?;
        gauge(
            &mut e,
            "storage_corrupt_copies",
            "Local blob copies found not to match their digest since the node started (each quarantined)",
            s.scrub.corrupt as i64,
        )?;
        gauge(
            &mut e,
            "storage_quarantined_waiting",
            "Quarantined blobs still waiting for a good copy from another node",
            s.scrub.waiting as i64,
        )?;
        gauge(
            &mut e,
            "storage_scrub_last_pass_end_timestamp_seconds",
            "When this node last finished a scrub pass over its blobs (0: none yet)",
            s.scrub.last_pass_end.unwrap_or(0) as i64,
        )?;
        gauge(
            &mut e,
            "storage_local_blobs",
            "Blobs this node stores (an estimate)",
            s.local_blobs as i64,
        )?;
        gauge(
            &mut e,
            "storage_local_blob_bytes",
            "Bytes of the blobs this node stores (added up every minute)",
            s.local_blob_bytes as i64,
        )?;
        gauge(
            &mut e,
            "storage_uploads_in_progress",
            "Upload sessions open on this node (an estimate)",
            s.uploads as i64,
        )?;
        gauge(
            &mut e,
            "storage_disk_free_bytes",
            "Free bytes on the data directory's file system",
            s.disk_free as i64,
        )?;
        gauge(
            &mut e,
            "storage_disk_size_bytes",
            "Size of the data directory's file system",
            s.disk_total as i64,
        )?;
        gauge(
            &mut e,
            "webhook_endpoints",
            "Webhook endpoints",
            s.webhook_endpoints as i64,
        )?;
        if let Some(gc) = &s.gc {
            for (name, help, value) in [
                (
                    "gc_last_run_finished_timestamp_seconds",
                    "When the last garbage collection ended (0 while it runs)",
                    gc.finished,
                ),
                (
                    "gc_last_run_collected_blobs",
                    "Blobs the last garbage collection removed",
                    gc.blobs,
                ),
                (
                    "gc_last_run_collected_manifests",
                    "Manifests the last garbage collection removed",
                    gc.manifests,
                ),
                (
                    "gc_last_run_collected_bytes",
                    "Bytes of the blobs the last garbage collection removed",
                    gc.bytes,
                ),
                (
                    "gc_swept_bytes",
                    "Bytes this node's sweep freed for the last collection",
                    gc.swept_bytes,
                ),
                (
                    "gc_sweep_pending_files",
                    "Files of collected blobs this node has still to remove",
                    gc.pending_files,
                ),
            ] {
                gauge(&mut e, name, help, value as i64)?;
            }
        }
        type Figure = fn(&MirrorFigures) -> u64;
        let per_mirror: [(&str, &str, Figure); 3] = [
            (
                "mirror_hits",
                "Mirror pulls this node served from the cache",
                |m| m.hits,
            ),
            (
                "mirror_misses",
                "Mirror pulls this node had to fetch from the upstream (or joined a fetch of)",
                |m| m.misses,
            ),
            (
                "mirror_upstream_bytes",
                "Bytes this node fetched from each mirror's upstream",
                |m| m.upstream_bytes,
            ),
        ];
        for (name, help, figure) in per_mirror {
            #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
            struct Mirror {
                mirror: String,
            }
            if s.mirrors.is_empty() {
                continue;
            }
            let kind = ConstCounter::new(0u64).metric_type();
            let mut family = e.encode_descriptor(name, help, None, kind)?;
            for m in &s.mirrors {
                let labels = Mirror {
                    mirror: m.name.clone(),
                };
                ConstCounter::new(figure(m)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
