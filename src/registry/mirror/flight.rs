//! This node's fetches from upstreams, one per blob: every reader of a blob
//! being fetched here, local or on another node, follows the same download
//! (a [`Spool`]). A finished fetch is verified, copied to a write quorum
//! and linked into the mirror's repository, like a pushed blob.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::{Pull, UpstreamError};
use crate::cluster::Cluster;
use crate::meta::Command;
use crate::oci::Digest;
use crate::registry::{Error, Registry, Result};
use crate::replication::Replicator;
use crate::storage::{now_secs, ByteStream, Follow, Hold, Spool};

/// What a reader finds for a blob on this node.
#[derive(Clone)]
pub(super) enum Arrival {
    /// A fetch under way (or just finished): follow it.
    Spooling(Follow),
    /// The node already stores the blob.
    Stored,
}

/// The fetches under way on this node, by digest.
#[derive(Default)]
pub struct Flights(Mutex<HashMap<Digest, Arc<OnceCell<Arrival>>>>);

impl Flights {
    fn cell(&self, digest: &Digest) -> Arc<OnceCell<Arrival>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(digest.clone()).or_default().clone()
    }

    /// Forgets `cell` once its fetch has ended, unless a newer one took
    /// its place.
    fn land(&self, digest: &Digest, cell: &Arc<OnceCell<Arrival>>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(digest).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            map.remove(digest);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What a fetch needs once its request has returned.
struct Landing {
    replicator: Replicator,
    cluster: Arc<Cluster>,
    flights: Arc<Flights>,
    cell: Arc<OnceCell<Arrival>>,
    pull: Pull,
    digest: Digest,
    size: u64,
    _hold: Hold,
}

impl Registry {
    /// Bytes `offset..` of `digest` as this node has them or is fetching
    /// them from `pull`'s upstream, starting that fetch unless one is
    /// under way: with the blob's size.
    pub(super) async fn pull_here(
        &self,
        pull: &Pull,
        digest: &Digest,
        offset: u64,
    ) -> Result<(u64, ByteStream)> {
        let mut cell = self.flights.cell(digest);
        let mut arrival = self.arrival(pull, digest, &cell).await?;
        // A fetch that just failed may not have left yet: start anew.
        if matches!(&arrival, Arrival::Spooling(f) if f.failed()) {
            self.flights.land(digest, &cell);
            cell = self.flights.cell(digest);
            arrival = self.arrival(pull, digest, &cell).await?;
        }
        match arrival {
            Arrival::Spooling(follow) => Ok((follow.size(), follow.read(offset, follow.size()))),
            Arrival::Stored => {
                self.flights.land(digest, &cell);
                let size = self.blobs.stat(digest)?.ok_or(Error::BlobUnknown)?.size;
                let offset = offset.min(size);
                Ok((size, self.blobs.read(digest, offset, size - offset)?))
            }
        }
    }

    /// The fetch `cell` holds, started by this call if it holds none.
    async fn arrival(
        &self,
        pull: &Pull,
        digest: &Digest,
        cell: &Arc<OnceCell<Arrival>>,
    ) -> Result<Arrival> {
        match cell
            .get_or_try_init(|| self.start_fetch(pull, digest, cell.clone()))
            .await
        {
            Ok(a) => Ok(a.clone()),
            Err(e) => {
                self.flights.land(digest, cell);
                Err(e)
            }
        }
    }

    /// Asks the upstream for the blob and spools its answer in the
    /// background; readers follow the spool.
    async fn start_fetch(
        &self,
        pull: &Pull,
        digest: &Digest,
        cell: Arc<OnceCell<Arrival>>,
    ) -> Result<Arrival> {
        // A fetch that ended just before this one began left the blob here,
        // linked into the mirror's repository. Bytes another repository
        // holds are not served through a mirror: that would show a private
        // blob to whoever may read the mirror. Nor is a file whose blob was
        // collected and waits for its sweep.
        let linked = self.meta.blob_link(&pull.cache, digest)?.is_some();
        if linked && self.blobs.stat(digest)?.is_some() {
            return Ok(Arrival::Stored);
        }
        let mirror = &pull.mirror;
        let (size, body) = match mirror.upstream.blob(&pull.remote, digest).await {
            Ok(found) => found,
            Err(e) => {
                mirror.stats.failed(&e.to_string());
                return Err(upstream_error(e, Error::BlobUnknown));
            }
        };
        let (spool, follow) = Spool::create(&self.blobs, digest, size)?;
        tracing::info!(mirror = %mirror.config.name, repository = %pull.remote, %digest, size, "fetching a blob from upstream");
        let landing = Landing {
            _hold: self.blobs.hold(digest),
            replicator: self.replicator.clone(),
            cluster: self.cluster.clone(),
            flights: self.flights.clone(),
            cell,
            pull: pull.clone(),
            digest: digest.clone(),
            size,
        };
        tokio::spawn(landing.run(spool, body));
        Ok(Arrival::Spooling(follow))
    }
}

impl Landing {
    /// Receives the whole blob, then copies and links it. Readers follow
    /// the spool meanwhile; once it is verified they have every byte, and
    /// the copies to other nodes need no reader to wait.
    async fn run(self, mut spool: Spool, mut body: ByteStream) {
        let stats = &self.pull.mirror.stats;
        let received = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                stats.fetched(chunk.len() as u64);
                spool.append(chunk).await.map_err(|e| e.to_string())?;
            }
            spool.finish().await.map_err(|e| e.to_string())
        };
        match received.await {
            Ok(_) => self.link().await,
            Err(e) => {
                stats.failed(&e);
                tracing::warn!(mirror = %self.pull.mirror.config.name, digest = %self.digest, error = %e, "fetch from upstream failed; nothing of it is kept");
            }
        }
        self.flights.land(&self.digest, &self.cell);
    }

    /// Copies the verified blob to a write quorum and links it into the
    /// mirror's repository.
    async fn link(&self) {
        let holders = match self
            .replicator
            .replicate(&self.digest, self.size, None)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(digest = %self.digest, error = %e, "a fetched blob could not reach a write quorum; it will be fetched again");
                return;
            }
        };
        let cmd = Command::LinkBlob {
            repo: self.pull.cache.clone(),
            digest: self.digest.clone(),
            size: self.size,
            at: now_secs(),
            holders,
        };
        match self.cluster.write(cmd).await {
            Ok(Ok(())) => {
                tracing::info!(repository = %self.pull.cache, digest = %self.digest, size = self.size, "cached a blob from upstream")
            }
            Ok(Err(e)) => {
                tracing::warn!(digest = %self.digest, error = %e, "a fetched blob was not linked")
            }
            Err(e) => {
                tracing::warn!(digest = %self.digest, error = %e, "a fetched blob could not be linked; it will be fetched again")
            }
        }
    }
}

/// What a client hears of an upstream's failure; `unknown` when the
/// upstream has no such thing.
pub(super) fn upstream_error(e: UpstreamError, unknown: Error) -> Error {
    match e {
        UpstreamError::NotFound(_) => unknown,
        UpstreamError::Unreachable(m) | UpstreamError::Refused(m) => Error::Upstream(m),
    }
}
