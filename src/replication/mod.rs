//! Moving blob content between nodes.
//!
//! - On upload, the node that takes a blob copies it to the rest of its
//!   replica set ([`placement`]) and acknowledges the client once a write
//!   quorum holds verified copies; the other copies follow in the background.
//!   Where the replica set is known before the bytes arrive, the copies
//!   stream while the client uploads ([`Replicator::mirror`]); otherwise
//!   they start from the stored file once it is committed.
//! - A node asked for a blob it does not hold fetches it from a holder once,
//!   however many ask, and streams it to every reader while keeping a
//!   verified local copy ([`relay`]).
//! - Peers receive and serve bytes through the `Blobs` gRPC service
//!   ([`service`]), which verifies every pushed byte before indexing it.

pub mod placement;
mod relay;
pub mod repair;
pub mod service;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::cluster::pb::BlobChunk;
use crate::cluster::types::{NodeAddr, NodeId};
use crate::cluster::Cluster;
use crate::meta::Command;
use crate::oci::Digest;
use crate::storage::{BlobStore, Mirror, MirrorSink, Mirrored};
pub use placement::ReplicationFactor;
pub use relay::{Flights, Pace, Relay};

/// Bytes per chunk of a blob pushed to a peer.
const PUSH_CHUNK: usize = 1 << 20;
/// Longest a single blob copy to a peer may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(3600);
/// Uploads whose copies may stream at once; later ones copy after commit.
/// Each holds a gRPC stream per peer open until its session ends.
const MIRRORED_UPLOADS: usize = 32;
/// Batches queued for each streamed copy.
const MIRROR_QUEUE: usize = 4;

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
    mirrored: Arc<Semaphore>,
    flights: Flights,
}

impl Replicator {
    /// `flights` is shared with the peer `Blobs` service, which lets peers
    /// fetch what this node is still receiving.
    pub fn new(
        blobs: BlobStore,
        cluster: Arc<Cluster>,
        factor: ReplicationFactor,
        flights: Flights,
    ) -> Replicator {
        Replicator {
            blobs,
            cluster,
            factor,
            mirrored: Arc::new(Semaphore::new(MIRRORED_UPLOADS)),
            flights,
        }
    }

    /// Whether this node stores the blob's bytes.
    fn holds(&self, digest: &Digest) -> bool {
        matches!(self.blobs.stat(digest), Ok(Some(_)))
    }

    /// Whether this node's size cap lets it keep a blob of `size` bytes.
    fn may_keep(&self, size: u64) -> bool {
        self.blobs.check_declared(0, Some(size)).is_ok()
    }

    fn member_addr(&self, id: NodeId) -> Option<NodeAddr> {
        self.cluster
            .members()
            .into_iter()
            .find(|(m, _)| *m == id)
            .map(|(_, a)| a)
    }

    /// Opens copies of a blob that is about to arrive on the peers that
    /// should hold it, when those are known before the bytes are: its digest
    /// is given, or every member keeps a copy of every blob. `None` when
    /// there is no such peer or too many uploads stream copies already.
    pub fn mirror(&self, digest: Option<&Digest>) -> Option<Mirror> {
        let me = self.cluster.id();
        let members = self.cluster.members();
        let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
        let set = match digest {
            Some(d) => placement::replica_set(d, &ids, me, self.factor),
            None if placement::copies(self.factor, ids.len()) == ids.len() => ids,
            None => return None,
        };
        if set.len() < 2 {
            return None;
        }
        let permit = Arc::new(self.mirrored.clone().try_acquire_owned().ok()?);
        let sinks = members
            .into_iter()
            .filter(|(id, _)| *id != me && set.contains(id))
            .map(|(id, addr)| {
                let (tx, rx) = mpsc::channel(MIRROR_QUEUE);
                let (verdict, kept) = oneshot::channel();
                let copy = self
                    .clone()
                    .push_mirrored(addr, digest.cloned(), rx, permit.clone());
                tokio::spawn(async move { verdict.send(copy.await) });
                MirrorSink::new(id, tx, kept)
            })
            .collect();
        Some(Mirror::new(sinks))
    }

    /// Copies a blob this node just stored to the rest of its replica set,
    /// finishing the copies `mirror` streamed while it arrived. Returns once
    /// a write quorum holds it, with the nodes that do; copies still under
    /// way finish in the background and are recorded then.
    pub async fn replicate(
        &self,
        digest: &Digest,
        size: u64,
        mirror: Option<Mirror>,
    ) -> Result<Vec<NodeId>, ReplicationError> {
        let me = self.cluster.id();
        let members = self.cluster.members();
        let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
        let set = placement::replica_set(digest, &ids, me, self.factor);
        let needed = placement::write_quorum(set.len());
        let mut streamed: HashMap<NodeId, MirrorSink> = mirror
            .map(Mirror::into_sinks)
            .unwrap_or_default()
            .into_iter()
            .map(|sink| (sink.id, sink))
            .collect();
        let mut held = vec![me];
        let mut pushes: FuturesUnordered<_> = set
            .iter()
            .filter(|&&id| id != me)
            .filter_map(|&id| members.iter().find(|(m, _)| *m == id).cloned())
            .map(|(id, addr)| {
                // Each copy runs as its own task: those still running when the
                // quorum is reached carry on after the client has its answer.
                let copy =
                    self.clone()
                        .finish_copy(addr, streamed.remove(&id), digest.clone(), size);
                let copy = tokio::spawn(copy);
                async move { (id, copy.await.unwrap_or_else(|e| Err(e.to_string()))) }
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

    /// Waits for a copy streamed during the upload; without one, or if it
    /// failed, sends the stored file.
    async fn finish_copy(
        self,
        addr: NodeAddr,
        streamed: Option<MirrorSink>,
        digest: Digest,
        size: u64,
    ) -> Result<(), String> {
        if let Some(sink) = streamed {
            match sink.kept().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(%digest, peer = %addr.peer, error = %e, "streamed copy failed; sending the stored blob")
                }
            }
        }
        self.push_to(addr, digest, size).await
    }

    /// Streams a blob to a peer while it arrives here: the bytes as the
    /// mirror hands them on, then its digest once this node verified it. A
    /// mirror that stops without a digest makes the peer discard the copy.
    async fn push_mirrored(
        self,
        addr: NodeAddr,
        digest: Option<Digest>,
        rx: mpsc::Receiver<Mirrored>,
        _permit: Arc<OwnedSemaphorePermit>,
    ) -> Result<(), String> {
        let header = BlobChunk {
            digest: digest.map(|d| d.to_string()).unwrap_or_default(),
            size: 0,
            data: bytes::Bytes::new(),
        };
        let rest = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = match rx.recv().await? {
                Mirrored::Data(data) => BlobChunk {
                    digest: String::new(),
                    size: 0,
                    data,
                },
                Mirrored::End { digest, size } => BlobChunk {
                    digest: digest.to_string(),
                    size,
                    data: bytes::Bytes::new(),
                },
            };
            Some((chunk, rx))
        });
        self.send(&addr, futures_util::stream::iter([header]).chain(rest))
            .await
    }

    /// Streams a local blob to a peer, which verifies it before storing it.
    async fn push_to(self, addr: NodeAddr, digest: Digest, size: u64) -> Result<(), String> {
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
        self.send(&addr, chunks).await
    }

    /// One `Push` call: the peer answers once it verified and stored the
    /// blob, or refused it.
    async fn send(
        &self,
        addr: &NodeAddr,
        chunks: impl futures_util::Stream<Item = BlobChunk> + Send + 'static,
    ) -> Result<(), String> {
        let client = self
            .cluster
            .pool()
            .client(&addr.peer)
            .map_err(|e| e.to_string())?;
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
