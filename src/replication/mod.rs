//! Moving blob content between nodes.
//!
//! - On upload, the node that committed a blob pushes it to the rest of its
//!   replica set ([`placement`]) and acknowledges the client once a write
//!   quorum holds verified copies; the other copies follow in the background.
//! - A node asked for a blob it does not hold streams it from a holder to the
//!   client while keeping a verified local copy ([`relay`]).
//! - Peers receive and serve bytes through the `Blobs` gRPC service
//!   ([`service`]), which verifies every pushed byte before indexing it.

pub mod placement;
mod relay;
pub mod repair;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use crate::cluster::pb::BlobChunk;
use crate::cluster::types::{NodeAddr, NodeId};
use crate::cluster::Cluster;
use crate::meta::Command;
use crate::oci::Digest;
use crate::storage::BlobStore;
pub use placement::ReplicationFactor;

/// Bytes per chunk of a blob pushed to a peer.
const PUSH_CHUNK: usize = 1 << 20;
/// Longest a single blob copy to a peer may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("blob {digest} is stored on {held} of {wanted} nodes, but {needed} must hold it before the upload is acknowledged: {reasons}")]
    NoQuorum {
        digest: Digest,
        held: usize,
        wanted: usize,
        needed: usize,
        reasons: String,
    },
    #[error("no node that holds {digest} can be reached: {reasons}")]
    NoHolder { digest: Digest, reasons: String },
}

#[derive(Clone)]
pub struct Replicator {
    blobs: BlobStore,
    cluster: Arc<Cluster>,
    factor: ReplicationFactor,
}

impl Replicator {
    pub fn new(blobs: BlobStore, cluster: Arc<Cluster>, factor: ReplicationFactor) -> Replicator {
        Replicator {
            blobs,
            cluster,
            factor,
        }
    }

    /// Whether this node stores the blob's bytes.
    fn holds(&self, digest: &Digest) -> bool {
        matches!(self.blobs.stat(digest), Ok(Some(_)))
    }

    fn member_addr(&self, id: NodeId) -> Option<NodeAddr> {
        self.cluster
            .members()
            .into_iter()
            .find(|(m, _)| *m == id)
            .map(|(_, a)| a)
    }

    /// Copies a blob this node just stored to the rest of its replica set.
    /// Returns once a write quorum holds it, with the nodes that do; copies
    /// still under way finish in the background and are recorded then.
    pub async fn replicate(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<NodeId>, ReplicationError> {
        let me = self.cluster.id();
        let members = self.cluster.members();
        let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
        let set = placement::replica_set(digest, &ids, me, self.factor);
        let needed = placement::write_quorum(set.len());
        let mut held = vec![me];
        let mut pushes: FuturesUnordered<_> = set
            .iter()
            .filter(|&&id| id != me)
            .filter_map(|&id| members.iter().find(|(m, _)| *m == id).cloned())
            .map(|(id, addr)| {
                // Each copy runs as its own task: those still running when the
                // quorum is reached carry on after the client has its answer.
                let push = tokio::spawn(self.clone().push_to(addr, digest.clone(), size));
                async move { (id, push.await.unwrap_or_else(|e| Err(e.to_string()))) }
            })
            .collect();
        let mut reasons = Vec::new();
        while held.len() < needed {
            match pushes.next().await {
                Some((id, Ok(()))) => held.push(id),
                Some((id, Err(e))) => reasons.push(format!("node {id}: {e}")),
                None => break,
            }
        }
        if held.len() < needed {
            return Err(ReplicationError::NoQuorum {
                digest: digest.clone(),
                held: held.len(),
                wanted: set.len(),
                needed,
                reasons: reasons.join("; "),
            });
        }
        if !pushes.is_empty() {
            let cluster = self.cluster.clone();
            let digest = digest.clone();
            tokio::spawn(async move {
                let mut more = Vec::new();
                while let Some((id, result)) = pushes.next().await {
                    match result {
                        Ok(()) => more.push(id),
                        Err(e) => {
                            tracing::warn!(%digest, node = id, error = %e, "background copy failed; repair will retry")
                        }
                    }
                }
                record_holders(cluster, digest, more).await;
            });
        }
        Ok(held)
    }

    /// Streams a local blob to a peer, which verifies it before storing it.
    async fn push_to(self, addr: NodeAddr, digest: Digest, size: u64) -> Result<(), String> {
        let client = self
            .cluster
            .pool()
            .client(&addr.peer)
            .map_err(|e| e.to_string())?;
        let file = tokio::fs::File::from_std(self.blobs.open(&digest).map_err(|e| e.to_string())?);
        let header = BlobChunk {
            digest: digest.to_string(),
            size,
            data: bytes::Bytes::new(),
        };
        // The header first, then the file. A read error ends the stream
        // early; the receiver then refuses the short blob, so no partial copy
        // is ever indexed.
        let chunks =
            futures_util::stream::unfold((file, Some(header)), |(mut file, header)| async move {
                if let Some(header) = header {
                    return Some((header, (file, None)));
                }
                let mut data = vec![0u8; PUSH_CHUNK];
                match file.read(&mut data).await {
                    Ok(n) if n > 0 => {
                        data.truncate(n);
                        let chunk = BlobChunk {
                            digest: String::new(),
                            size: 0,
                            data: data.into(),
                        };
                        Some((chunk, (file, None)))
                    }
                    _ => None,
                }
            });
        let request = client.request(chunks, PUSH_TIMEOUT);
        client
            .blobs()
            .push(request)
            .await
            .map(|_| ())
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
    }
}

/// Records in the replicated metadata that `nodes` now hold `digest`.
async fn record_holders(cluster: Arc<Cluster>, digest: Digest, nodes: Vec<NodeId>) {
    if nodes.is_empty() {
        return;
    }
    let cmd = Command::AddHolders {
        digest: digest.clone(),
        nodes,
    };
    if let Err(e) = cluster.write(cmd).await {
        tracing::warn!(%digest, error = %e, "could not record new blob holders; repair will");
    }
}
