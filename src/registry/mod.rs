//! The operations a client asks for, written once and used by the HTTP layer:
//! uploads and their commit, blob reads, manifest push and resolution,
//! deletes, listings and referrers. Nothing here knows about HTTP framing.

mod backup;
mod browse;
mod error;
mod manifests;
pub mod mirror;
mod observe;
mod policies;
mod scrub;
mod uploads;
mod webhooks;

use std::sync::Arc;

pub use backup::BackupSnapshot;
pub use browse::TagEntry;
pub use error::Error;
pub use manifests::{ManifestPushed, ResolvedManifest};
pub use scrub::ScrubConfig;
pub use uploads::{StartUpload, UploadStarted};
pub use webhooks::{Deliveries, WebhookStatus};

use crate::cluster::Cluster;
use crate::db::Db;
use crate::gc::{Collector, GcConfig, Outcome, RunRequest};
use crate::meta::access::{AccessChange, AccessState};
use crate::meta::gc::GcState;
use crate::meta::{Command, Page, StateMachine};
use crate::oci::{Descriptor, Digest, RepoName};
use crate::replication::repair::{self, RepairConfig, RepairStats};
use crate::replication::{ReplicationFactor, Replicator};
use crate::storage::{BlobStore, ByteStream, Layout, Uploads};

pub type Result<T> = std::result::Result<T, Error>;

pub const DEFAULT_MAX_MANIFEST_SIZE: usize = 4 << 20;

pub struct Registry {
    blobs: BlobStore,
    uploads: Uploads,
    /// Reads of the replicated state; writes go through `cluster`.
    meta: StateMachine,
    cluster: Arc<Cluster>,
    replicator: Replicator,
    repair_stats: RepairStats,
    scrub_stats: scrub::ScrubStats,
    collector: Arc<Collector>,
    max_manifest_size: usize,
    mirrors: mirror::Mirrors,
    /// Blobs this node is fetching from upstreams.
    flights: Arc<mirror::Flights>,
    /// Webhook delivery, which runs while this node leads.
    delivery: Arc<crate::events::Delivery>,
    /// What scrapes read: the database's estimates and the data directory.
    db: Db,
    data_dir: std::path::PathBuf,
    metrics: Arc<crate::metrics::Metrics>,
    /// Bytes of this node's blobs as last added up (`tally_local_blobs`).
    local_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// The registry itself, for work that outlives a request.
    me: std::sync::Weak<Registry>,
}

/// A registry's settings, from the node's configuration.
pub struct Settings {
    pub replication_factor: ReplicationFactor,
    pub max_manifest_size: usize,
    pub gc: GcConfig,
    pub mirrors: mirror::Mirrors,
    pub events: crate::events::Settings,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The blobs this node is fetching from peers, shared with the peer
    /// `Blobs` service.
    pub peer_flights: crate::replication::Flights,
}

/// Whether a read must be provably fresh, or may be answered from what this
/// node already holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Tags and listings change: read only after a read index. Without a
    /// quorum they get 503.
    Required,
    /// Content named by digest never changes, but it can be deleted: both
    /// "exists" and "does not exist" wait for a read index, so a delete that
    /// completed anywhere is seen. When the node is cut off from a quorum
    /// (it knows no leader, or its read indexes keep failing for want of
    /// one), a local hit is served at once instead: availability over
    /// freshness.
    ContentAddressed,
}

/// A byte range of a blob as the client asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last`, inclusive.
    FromTo(u64, u64),
    /// `first-`
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// First and last byte (inclusive) within a blob of `size`, or `None` if
    /// the range is not satisfiable.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let (first, last) = match self {
            ByteRange::FromTo(f, l) if f <= l => (f, l.min(size.checked_sub(1)?)),
            ByteRange::FromTo(..) => return None,
            ByteRange::From(f) => (f, size.checked_sub(1)?),
            ByteRange::Suffix(0) => return None,
            ByteRange::Suffix(n) => (size.saturating_sub(n), size.checked_sub(1)?),
        };
        (first < size).then_some((first, last))
    }
}

/// A blob being served: its full size, the byte range sent, and the bytes.
pub struct BlobRead {
    pub size: u64,
    pub range: Option<(u64, u64)>,
    pub body: ByteStream,
}

impl Registry {
    /// `blobs` is this node's one store, shared with the peer `Blobs`
    /// service so that every copy that arrives is pinned where the sweeper
    /// looks.
    pub fn new(
        layout: Layout,
        db: Db,
        blobs: BlobStore,
        cluster: Arc<Cluster>,
        settings: Settings,
    ) -> Arc<Registry> {
        let meta = StateMachine::new(db.clone());
        let budgets = settings.mirrors.budgets();
        let collector = Collector::new(
            meta.clone(),
            cluster.clone(),
            blobs.clone(),
            settings.gc,
            budgets,
        );
        let delivery = crate::events::Delivery::new(meta.clone(), cluster.clone(), settings.events);
        let data_dir = layout.root().to_owned();
        let metrics = settings.metrics.clone();
        let registry = Arc::new_cyclic(|me| Registry {
            delivery,
            db: db.clone(),
            data_dir,
            metrics,
            collector: Arc::new(collector),
            uploads: Uploads::new(cluster.id(), layout, db.clone(), blobs.clone()),
            replicator: Replicator::new(
                blobs.clone(),
                cluster.clone(),
                settings.replication_factor,
                settings.peer_flights,
            ),
            repair_stats: RepairStats::default(),
            scrub_stats: Default::default(),
            blobs,
            meta,
            cluster,
            max_manifest_size: settings.max_manifest_size,
            mirrors: settings.mirrors,
            flights: Arc::default(),
            local_bytes: Arc::default(),
            me: me.clone(),
        });
        let configs: Arc<dyn crate::events::platforms::Configs> = registry.clone();
        registry
            .delivery
            .platforms
            .set_source(Arc::downgrade(&configs));
        let state: Arc<dyn crate::metrics::State> = registry.clone();
        registry.metrics.set_state(Arc::downgrade(&state));
        registry
    }

    /// The registry behind `&self`, for a task that outlives the request.
    fn handle(&self) -> Arc<Registry> {
        self.me
            .upgrade()
            .expect("a registry serving a request is alive")
    }

    /// Whether this node can serve; the reason when it cannot.
    pub async fn readiness(&self) -> std::result::Result<(), crate::cluster::NotReady> {
        self.cluster.readiness().await
    }

    /// How long no upload session has been in use (see
    /// [`Uploads::quiet_for`]): a stopping node waits for a quiet spell.
    pub fn uploads_quiet_for(&self) -> Option<std::time::Duration> {
        self.uploads.quiet_for()
    }

    pub fn cluster_status(&self) -> crate::cluster::status::StatusReport {
        let mut report = self.cluster.status();
        report.repair = self.repair_stats.get();
        report.scrub = self.scrub_stats.get(self.blobs.corrupt());
        report
    }

    /// The cluster as its leader sees it, with this node's repair figures.
    pub async fn leader_status(&self) -> crate::cluster::status::StatusReport {
        let mut report = self.cluster.leader_status().await;
        report.repair = self.repair_stats.get();
        report.scrub = self.scrub_stats.get(self.blobs.corrupt());
        report
    }

    /// The background loop that brings blobs back to their replication
    /// factor; runs until `stop`.
    pub fn repair(
        &self,
        config: RepairConfig,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        repair::run(
            self.replicator.clone(),
            self.meta.clone(),
            config,
            self.repair_stats.clone(),
            stop,
        )
    }

    /// The leader's collection schedule and this node's sweeper; both run
    /// until `stop`.
    pub fn collection(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let schedule = self.collector.clone().schedule(stop.clone());
        let sweep = self.collector.clone().sweep(stop.clone());
        let pulls = self.handle().report_pulls(stop);
        async move {
            tokio::join!(schedule, sweep, pulls);
        }
    }

    /// Runs a garbage collection now, or previews one. This node's pulls
    /// through mirrors are reported first, so that eviction sees them.
    pub async fn collect_garbage(&self, req: &RunRequest) -> Result<Outcome> {
        self.flush_pulls().await?;
        Ok(self.collector.run(req).await?)
    }

    /// The latest collection and what each node swept.
    pub async fn gc_status(&self) -> Result<GcState> {
        Ok(self.collector.status().await?)
    }

    /// Removes a member; `secret` must be the cluster secret.
    pub async fn remove_node(&self, id: u64, secret: Option<&str>) -> Result<()> {
        if !self.cluster.admits_secret(secret) {
            return Err(Error::Denied(
                "removing a node needs the cluster secret".into(),
            ));
        }
        Ok(self.cluster.remove(id, 0).await?)
    }

    /// Whether `presented` is the cluster secret (which stands in for an
    /// administrator on the admin API).
    pub fn is_cluster_secret(&self, presented: Option<&str>) -> bool {
        self.cluster.is_secret(presented)
    }

    /// Changes users, teams, grants, visibility or robots; returns once
    /// this node applies the change.
    pub async fn change_access(
        &self,
        change: AccessChange,
        origin: crate::meta::events::Origin,
    ) -> Result<()> {
        let at = crate::storage::now_secs();
        self.write(Command::Access { change, at }.by(origin)).await
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.cluster.id()
    }

    /// Users, teams, grants, visibility and robots, as fresh as a write.
    pub async fn access(&self) -> Result<AccessState> {
        Ok(self.fresh().await?.access()?)
    }

    /// Applies a command through the cluster; returns once this node has
    /// applied it.
    async fn write(&self, cmd: Command) -> Result<()> {
        let started = std::time::Instant::now();
        let written = self.cluster.write(cmd).await;
        self.metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(written??)
    }

    /// Waits until this node has applied every write completed anywhere
    /// before the call; whether it could. A node cut off from the quorum
    /// says no at once rather than wait out an election.
    pub async fn catch_up(&self) -> bool {
        self.cluster.linearize_unless_cut_off().await.is_ok()
    }

    /// Waits until this node's metadata includes every write completed
    /// anywhere before the call.
    async fn fresh(&self) -> Result<&StateMachine> {
        self.cluster.linearize().await?;
        Ok(&self.meta)
    }

    /// Looks something up in the metadata, as fresh as `need` asks.
    async fn lookup<T>(
        &self,
        need: Freshness,
        find: impl Fn(&StateMachine) -> std::result::Result<Option<T>, crate::db::DbError>,
    ) -> Result<Option<T>> {
        let cut_off = match need {
            Freshness::Required => {
                self.cluster.linearize().await?;
                false
            }
            Freshness::ContentAddressed => match self.cluster.linearize_unless_cut_off().await {
                Ok(()) => false,
                Err(e) if e.quorum_unreachable() => true,
                Err(e) => return Err(e.into()),
            },
        };
        match find(&self.meta)? {
            // Cut off, a miss cannot be vouched for: it waits for a read
            // index as a tag read does (through an election, or to 503).
            None if cut_off => Ok(find(self.fresh().await?)?),
            found => Ok(found),
        }
    }

    /// The size of a blob the repository holds (on any node).
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.lookup(Freshness::ContentAddressed, |m| m.blob_link(repo, digest))
            .await?
            .ok_or(Error::BlobUnknown)
    }

    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead> {
        let size = self.stat_blob(repo, digest).await?;
        let range = range
            .map(|r| r.resolve(size).ok_or(Error::RangeNotSatisfiable { size }))
            .transpose()?;
        let body = self.blob_body(digest, size, range).await?;
        Ok(BlobRead { size, range, body })
    }

    /// The bytes of `range` (all when `None`) of a `size`-byte blob: this
    /// node's copy, or else streamed from a holder, keeping a copy of a
    /// whole blob.
    async fn blob_body(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<(u64, u64)>,
    ) -> Result<crate::storage::ByteStream> {
        let (offset, len) = match range {
            Some((first, last)) => (first, last - first + 1),
            None => (0, size),
        };
        Ok(match self.blobs.stat(digest)? {
            Some(_) => self.blobs.read(digest, offset, len)?,
            None => {
                let holders = self.meta.holders(digest)?;
                let relay = self.replicator.relay(digest, size, range, holders).await?;
                if relay.fetched {
                    self.metrics.relayed(len);
                }
                relay.body
            }
        })
    }

    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let cmd = Command::UnlinkBlob {
            repo: repo.clone(),
            digest: digest.clone(),
        };
        self.write(cmd).await
    }

    pub async fn tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Page> {
        let meta = self.fresh().await?;
        if !meta.repo_exists(repo)? {
            return Err(Error::NameUnknown);
        }
        Ok(meta.tags(repo, last, n)?)
    }

    /// The repositories `visible` admits, in pages.
    pub async fn catalog(
        &self,
        last: Option<&str>,
        n: usize,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Page> {
        Ok(self.fresh().await?.repositories_where(last, n, visible)?)
    }

    /// Descriptors of the manifests whose subject is `subject`, optionally
    /// only those of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let found = self.fresh().await?.referrers(repo, subject)?;
        Ok(found
            .into_iter()
            .filter(|(_, m)| artifact_type.is_none() || m.artifact_type.as_deref() == artifact_type)
            .map(|(digest, m)| Descriptor {
                size: m.body.len() as u64,
                media_type: m.media_type,
                digest,
                artifact_type: m.artifact_type,
                annotations: m.annotations,
                urls: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRange::*;

    #[test]
    fn ranges_resolve_against_size() {
        assert_eq!(FromTo(0, 9).resolve(10), Some((0, 9)));
        assert_eq!(FromTo(5, 100).resolve(10), Some((5, 9)));
        assert_eq!(FromTo(10, 12).resolve(10), None);
        assert_eq!(FromTo(3, 2).resolve(10), None);
        assert_eq!(From(9).resolve(10), Some((9, 9)));
        assert_eq!(From(10).resolve(10), None);
        assert_eq!(Suffix(3).resolve(10), Some((7, 9)));
        assert_eq!(Suffix(30).resolve(10), Some((0, 9)));
        assert_eq!(Suffix(0).resolve(10), None);
        assert_eq!(From(0).resolve(0), None);
    }
}
