//! The peer `Mirrors` service: another node's client waits for a blob this
//! node fetches (or is asked to fetch) from an upstream.

use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::cluster::pb::mirrors_server::{Mirrors, MirrorsServer};
use crate::cluster::pb::{BlobChunk, PullRequest};
use crate::oci::Digest;
use crate::registry::{Error, Registry};

/// The registry, once it exists: the peer listener starts before it does.
pub type Late = Arc<OnceLock<Weak<Registry>>>;

pub struct MirrorService {
    registry: Late,
}

impl MirrorService {
    pub fn new(registry: Late) -> MirrorsServer<MirrorService> {
        MirrorsServer::new(MirrorService { registry })
    }
}

type PullStream = Pin<Box<dyn Stream<Item = Result<BlobChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Mirrors for MirrorService {
    type PullStream = PullStream;

    async fn pull(&self, req: Request<PullRequest>) -> Result<Response<PullStream>, Status> {
        let req = req.into_inner();
        let registry = self
            .registry
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Status::unavailable("this node is starting"))?;
        let digest: Digest = req
            .digest
            .parse()
            .map_err(|e: crate::oci::ParseError| Status::invalid_argument(e.to_string()))?;
        let (size, body) = registry
            .serve_pull(&req.mirror, &req.repository, &digest, req.offset)
            .await
            .map_err(status)?;
        let head = BlobChunk {
            digest: String::new(),
            size,
            data: bytes::Bytes::new(),
        };
        let rest = body.map(|r| {
            r.map(|data| BlobChunk {
                digest: String::new(),
                size: 0,
                data,
            })
            .map_err(|e| Status::aborted(e.to_string()))
        });
        Ok(Response::new(Box::pin(
            futures_util::stream::iter([Ok(head)]).chain(rest),
        )))
    }
}

impl Registry {
    /// A peer's pull of a blob from one of this node's mirrors.
    async fn serve_pull(
        &self,
        mirror: &str,
        remote: &str,
        digest: &Digest,
        offset: u64,
    ) -> crate::registry::Result<(u64, crate::storage::ByteStream)> {
        let mirror = self
            .mirrors
            .by_name(mirror)
            .ok_or_else(|| Error::Upstream(format!("no mirror named {mirror} on this node")))?;
        let pull = super::pull(mirror, remote)
            .ok_or_else(|| Error::Upstream(format!("{remote} cannot be mirrored")))?;
        self.pull_here(&pull, digest, offset).await
    }
}

/// How a failed pull reads to the peer: an upstream's answer is final (the
/// peer would get the same from another member); the rest lets it move on.
fn status(e: Error) -> Status {
    match e {
        Error::BlobUnknown => Status::not_found(e.to_string()),
        Error::Upstream(_) => Status::failed_precondition(e.to_string()),
        Error::BodyTooLarge { .. } => Status::resource_exhausted(e.to_string()),
        e => Status::unavailable(e.to_string()),
    }
}
