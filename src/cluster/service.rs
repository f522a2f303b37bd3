//! The peer gRPC listener: Raft RPCs and cluster administration, behind the
//! cluster secret.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use openraft::error::Fatal;
use openraft::raft::SnapshotResponse;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::codec::{decode, encode};
use super::pb::cluster_server::{Cluster as ClusterRpc, ClusterServer};
use super::pb::raft_server::{Raft as RaftRpc, RaftServer};
use super::pb::{self, Empty, Payload};
use super::peer::{Secret, SECRET_HEADER};
use super::types::{NodeAddr, NodeId, SnapshotFile, SnapshotMeta, Vote};
use super::{Cluster, ClusterError};
use crate::meta::{Applied, Command};
use crate::storage::Layout;

/// Largest peer message: a batch of log entries, each holding at most one
/// manifest (capped at a few MiB).
pub const MAX_MESSAGE: usize = 256 << 20;

pub async fn serve(
    cluster: Arc<Cluster>,
    listener: tokio::net::TcpListener,
    secret: Secret,
    tls: Option<super::peer::PeerTls>,
    layout: Layout,
    extra: tonic::service::Routes,
    stop: CancellationToken,
) {
    let check = secret_check(secret);
    let handler = Handler { cluster, layout };
    let raft = RaftServer::new(handler.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let admin = ClusterServer::new(handler)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let raft = tonic::service::interceptor::InterceptedService::new(raft, check.clone());
    let admin = tonic::service::interceptor::InterceptedService::new(admin, check);
    let incoming = tokio_stream_listener(listener);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        // A client without a certificate the cluster CA signed gets no
        // answer at all: the handshake fails before any call is read.
        server = match server.tls_config(tls.server) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "peer TLS settings refused; peer listener not started");
                return;
            }
        };
    }
    let serving = server
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_routes(extra)
        .add_service(raft)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    // A graceful stop waits for calls in flight, and a peer's streamed
    // copy for an upload its client abandoned only ends when the peer gives
    // up on it; when every node stops at once, each waits for the others.
    // Past the grace, the calls are cut: their senders count them as failed.
    let grace = async {
        stop.cancelled().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        result = serving => {
            if let Err(e) = result {
                tracing::error!(error = %e, "peer listener failed");
            }
        }
        () = grace => tracing::info!("peer calls still in flight {STOP_GRACE:?} after the stop were cut"),
    }
}

/// How long a stopping node lets peer calls in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The interceptor every peer service sits behind: calls without the
/// cluster secret are refused, and the refusal is logged.
pub fn secret_check(secret: Secret) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        if secret.admits(req.metadata().get(SECRET_HEADER)) {
            Ok(req)
        } else {
            let from = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(%from, "refused a peer call without the right cluster secret");
            Err(Status::unauthenticated("missing or wrong cluster secret"))
        }
    }
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((conn, l))
    })
}

#[derive(Clone)]
struct Handler {
    cluster: Arc<Cluster>,
    layout: Layout,
}

fn payload<T: serde::Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    Ok(Response::new(Payload {
        data: encode(value),
    }))
}

#[tonic::async_trait]
impl RaftRpc for Handler {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode("append entries", &req.into_inner().data)?;
        payload(&self.cluster.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode("vote", &req.into_inner().data)?;
        payload(&self.cluster.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<Payload>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let (vote, meta, size): (Vote, SnapshotMeta, u64) =
            decode("snapshot header", &first.header)?;
        let path = super::snapshot::incoming_path(&self.layout.snapshots_dir());
        let received = receive(&path, first.data, &mut stream).await;
        match received {
            Ok(n) if n == size => {}
            Ok(n) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(Status::data_loss(format!(
                    "snapshot cut short: {n} of {size} bytes"
                )));
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
        }
        let snapshot = openraft::Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile { path }),
        };
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = self
            .cluster
            .raft
            .install_full_snapshot(vote, snapshot)
            .await;
        payload(&result)
    }
}

/// Writes a streamed snapshot to `path`; returns the bytes received.
async fn receive(
    path: &std::path::Path,
    first: Vec<u8>,
    stream: &mut Streaming<pb::SnapshotChunk>,
) -> Result<u64, Status> {
    let io = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    file.write_all(&first).await.map_err(io)?;
    let mut total = first.len() as u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        file.write_all(&chunk.data).await.map_err(io)?;
        total += chunk.data.len() as u64;
    }
    file.sync_all().await.map_err(io)?;
    Ok(total)
}

#[tonic::async_trait]
impl ClusterRpc for Handler {
    async fn forward(&self, req: Request<pb::ForwardRequest>) -> Result<Response<Payload>, Status> {
        let req = req.into_inner();
        let cmd: Command = decode("forwarded command", &req.command)?;
        let result: Result<(u64, Applied), (bool, String)> = self
            .cluster
            .write_forwarding(cmd, req.hops)
            .await
            .map_err(|e| (e.retryable(), e.to_string()));
        payload(&result)
    }

    async fn read_index(&self, _: Request<Empty>) -> Result<Response<pb::ReadIndexReply>, Status> {
        let index = self
            .cluster
            .read_index()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ReadIndexReply {
            index: index.unwrap_or(0),
            has_index: index.is_some(),
        }))
    }

    async fn hello(&self, _: Request<Empty>) -> Result<Response<pb::NodeHello>, Status> {
        // Internal, never a guess: discovery reads it as "state unknown".
        self.cluster
            .hello()
            .await
            .map(Response::new)
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let addr = NodeAddr {
            peer: req.peer_addr,
            api: req.api_addr,
        };
        self.cluster
            .join(req.node_id, addr, req.hops)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        self.cluster
            .remove(req.node_id, req.hops)
            .await
            .map_err(|e| match e {
                ClusterError::NotMember(_) => Status::not_found(e.to_string()),
                e => Status::failed_precondition(e.to_string()),
            })?;
        Ok(Response::new(Empty {}))
    }

    async fn status(&self, _: Request<Empty>) -> Result<Response<pb::ClusterStatus>, Status> {
        Ok(Response::new((&self.cluster.status()).into()))
    }

    async fn campaign(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.cluster
            .campaign()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }
}

pub(super) fn forward_request(cmd: &Command, hops: u32) -> pb::ForwardRequest {
    pb::ForwardRequest {
        command: encode(cmd),
        hops,
    }
}

pub(super) fn decode_forward_reply(reply: &Payload) -> Result<(u64, Applied), ClusterError> {
    let result: Result<(u64, Applied), (bool, String)> =
        decode("forward reply", &reply.data).map_err(|e| ClusterError::Raft(e.to_string()))?;
    result.map_err(|(retryable, reason)| match retryable {
        true => ClusterError::NoLeader(reason),
        false => ClusterError::Raft(reason),
    })
}

pub(super) fn status_to_error(s: Status, leader: NodeId, node: &NodeAddr) -> ClusterError {
    match s.code() {
        tonic::Code::NotFound => ClusterError::Raft(s.message().to_owned()),
        tonic::Code::Unavailable
            if s.message().contains("quorum") || s.message().contains("leader") =>
        {
            ClusterError::NoLeader(s.message().to_owned())
        }
        // tonic reports a connection that never formed as Unavailable: the
        // request did not reach the leader.
        code => ClusterError::LeaderUnreachable {
            leader,
            addr: node.peer.clone(),
            reason: format!("{}: {}", s.code(), s.message()),
            sent: code != tonic::Code::Unavailable,
        },
    }
}
