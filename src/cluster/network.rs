//! openraft's network: Raft RPCs to one member over gRPC.

use std::future::Future;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use tokio::io::AsyncReadExt;

use super::codec::{decode, encode};
use super::pb;
use super::peer::{PeerClient, PeerPool};
use super::types::{NodeAddr, NodeId, Snapshot, TypeConfig, Vote};

/// Bytes of snapshot per streamed chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, NodeAddr, RaftError<NodeId, E>>;

#[derive(Clone)]
pub struct Network {
    pool: PeerPool,
}

impl Network {
    pub fn new(pool: PeerPool) -> Network {
        Network { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Connection {
        Connection {
            target,
            client: self.pool.client(&node.peer).map_err(|e| e.to_string()),
            pool: self.pool.clone(),
        }
    }
}

pub struct Connection {
    target: NodeId,
    /// An address that cannot even form a URI fails every call.
    client: Result<PeerClient, String>,
    pool: PeerPool,
}

fn unreachable<E: std::error::Error>(e: impl ToString) -> RPCError<NodeId, NodeAddr, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.to_string())))
}

fn status_error<E: std::error::Error>(s: tonic::Status) -> RPCError<NodeId, NodeAddr, E> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            unreachable(s.message())
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

impl Connection {
    fn client<E: std::error::Error>(&self) -> Result<&PeerClient, RPCError<NodeId, NodeAddr, E>> {
        self.client.as_ref().map_err(unreachable)
    }

    /// One unary Raft call: encode, send, decode the remote result.
    async fn call<Req, Resp, E, F, Fut>(
        &self,
        req: &Req,
        timeout: Duration,
        send: F,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
        F: FnOnce(PeerClient, tonic::Request<pb::Payload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::Payload>, tonic::Status>>,
    {
        let client = match self.client() {
            Ok(c) => c.clone(),
            Err(e) => {
                self.pool.call_failed(self.target, "", &e.to_string());
                return Err(e);
            }
        };
        let addr = client.addr.clone();
        let request = client.request(pb::Payload { data: encode(req) }, timeout);
        let reply = match send(client, request).await {
            Ok(reply) => reply,
            Err(s) => {
                self.pool.call_failed(self.target, &addr, s.message());
                return Err(status_error(s));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode("raft reply", &reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.pool.heard_from(self.target);
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        self.call(&rpc, option.hard_ttl(), |c, r| async move {
            c.raft().append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        self.call(&rpc, option.hard_ttl(), |c, r| async move {
            c.raft().vote(r).await
        })
        .await
    }

    #[allow(deprecated)]
    async fn install_snapshot(
        &mut self,
        _rpc: openraft::raft::InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<openraft::raft::InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>>
    {
        Err(unreachable("snapshots are sent whole with full_snapshot"))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let client = self
            .client::<Fatal<NodeId>>()
            .map_err(|_| {
                StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(
                    "bad peer address",
                )))
            })?
            .clone();
        let file = tokio::fs::File::open(&snapshot.snapshot.path)
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?
            .len();
        let header = encode(&(vote, snapshot.meta.clone(), size));
        let chunks =
            futures_util::stream::unfold((file, Some(header)), |(mut file, header)| async move {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let n = match file.read(&mut buf).await {
                    Ok(n) => n,
                    // The receiver checks the size and refuses a short snapshot.
                    Err(e) => {
                        tracing::warn!(error = %e, "reading snapshot to send failed");
                        0
                    }
                };
                if n == 0 && header.is_none() {
                    return None;
                }
                buf.truncate(n);
                let chunk = pb::SnapshotChunk {
                    header: header.unwrap_or_default(),
                    data: buf,
                };
                Some((chunk, (file, None)))
            });
        let request = client.request(chunks, option.hard_ttl().max(Duration::from_secs(600)));
        let target = self.target;
        let send = async move { client.raft().install_snapshot(request).await };
        let reply = tokio::select! {
            reply = send => reply,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let reply = reply.map_err(|s| StreamingError::Network(NetworkError::new(&s)))?;
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            decode("snapshot reply", &reply.into_inner().data)
                .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        self.pool.heard_from(target);
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(target, e)))
    }
}
