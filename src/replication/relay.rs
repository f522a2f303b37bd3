//! Serving a blob this node does not hold: streamed from a holder to the
//! client. A whole-blob read also keeps a local copy, verified before it is
//! indexed; the last chunk reaches the client only after that verification,
//! so a peer that sends wrong bytes makes the response fail, never complete.

use std::io;

use bytes::Bytes;
use futures_util::StreamExt;
use rand::seq::SliceRandom;
use tokio::sync::mpsc;

use super::{record_holders, ReplicationError, Replicator};
use crate::cluster::pb::FetchRequest;
use crate::cluster::types::NodeId;
use crate::oci::Digest;
use crate::storage::ByteStream;

/// Longest a fetch from a peer may take before it is abandoned for another.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

type Chunk = io::Result<Bytes>;

fn channel_stream(rx: mpsc::Receiver<Chunk>) -> ByteStream {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }))
}

impl Replicator {
    /// Streams bytes `first..=last` (or the whole blob) of `digest`, held by
    /// `holders`, moving on to the next holder if one fails mid-stream.
    pub async fn relay(
        &self,
        digest: &Digest,
        size: u64,
        range: Option<(u64, u64)>,
        holders: Vec<NodeId>,
    ) -> Result<ByteStream, ReplicationError> {
        let me = self.cluster.id();
        let mut holders: Vec<NodeId> = holders.into_iter().filter(|&h| h != me).collect();
        // Spread load, and let a retry reach a different holder.
        holders.shuffle(&mut rand::rng());
        if holders.is_empty() {
            return Err(ReplicationError::NoHolder {
                digest: digest.clone(),
                reasons: "no other node holds it".into(),
            });
        }
        let (tx, rx) = mpsc::channel::<Chunk>(4);
        let this = self.clone();
        let digest = digest.clone();
        tokio::spawn(async move { this.relay_task(digest, size, range, holders, tx).await });
        Ok(channel_stream(rx))
    }

    async fn relay_task(
        self,
        digest: Digest,
        size: u64,
        range: Option<(u64, u64)>,
        holders: Vec<NodeId>,
        client: mpsc::Sender<Chunk>,
    ) {
        // A whole blob is kept, unless it is larger than this node takes:
        // then it is only passed on, like a range.
        let whole = range.is_none() && self.may_keep(size);
        let (first, end) = range.map(|(f, l)| (f, l + 1)).unwrap_or((0, size));
        // The local copy: the same bytes, into a verifying ingest.
        let (disk, disk_rx) = mpsc::channel::<Chunk>(4);
        let ingest = whole.then(|| {
            let blobs = self.blobs.clone();
            let digest = digest.clone();
            tokio::spawn(async move {
                blobs
                    .ingest(&digest, channel_stream(disk_rx), Some(size), None)
                    .await
            })
        });
        let mut offset = first;
        let mut held_back: Option<Bytes> = None;
        let mut reasons = Vec::new();
        for holder in &holders {
            if offset >= end {
                break;
            }
            let Some(addr) = self.member_addr(*holder) else {
                reasons.push(format!("node {holder} is not a member"));
                continue;
            };
            let stream = async {
                let client = self
                    .cluster
                    .pool()
                    .client(&addr.peer)
                    .map_err(|e| e.to_string())?;
                let req = FetchRequest {
                    digest: digest.to_string(),
                    offset,
                    length: end - offset,
                };
                client
                    .blobs()
                    .fetch(client.request(req, FETCH_TIMEOUT))
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("{}: {}", s.code(), s.message()))
            };
            let mut stream = match stream.await {
                Ok(s) => s,
                Err(e) => {
                    reasons.push(format!("node {holder}: {e}"));
                    continue;
                }
            };
            while let Some(chunk) = stream.next().await {
                let data = match chunk {
                    Ok(c) => c.data,
                    Err(s) => {
                        reasons.push(format!(
                            "node {holder} stopped at byte {offset}: {}",
                            s.message()
                        ));
                        break;
                    }
                };
                let data = data.slice(..data.len().min((end - offset) as usize));
                offset += data.len() as u64;
                if let Some(previous) = held_back.replace(data) {
                    if whole {
                        let _ = disk.send(Ok(previous.clone())).await;
                    }
                    // A client that went away does not stop the local copy.
                    let _ = client.send(Ok(previous)).await;
                }
            }
        }
        if offset < end {
            tracing::warn!(%digest, reasons = %reasons.join("; "), "relay failed: no holder could finish the blob");
            let _ = client
                .send(Err(io::Error::other(format!(
                    "no holder could send {digest}: {}",
                    reasons.join("; ")
                ))))
                .await;
            return; // dropping `disk` makes the ingest fail and discard its file
        }
        let last = held_back.unwrap_or_default();
        let Some(ingest) = ingest else {
            let _ = client.send(Ok(last)).await;
            return;
        };
        let _ = disk.send(Ok(last.clone())).await;
        drop(disk);
        match ingest.await {
            Ok(Ok(_)) => {
                let _ = client.send(Ok(last)).await;
                record_holders(self.cluster.clone(), digest, vec![self.cluster.id()]).await;
            }
            Ok(Err(e)) => {
                tracing::error!(%digest, holders = ?holders, error = %e, "a peer sent bytes that do not match the digest; copy discarded");
                let _ = client.send(Err(io::Error::other(e.to_string()))).await;
            }
            Err(e) => {
                let _ = client.send(Err(io::Error::other(e.to_string()))).await;
            }
        }
    }
}
