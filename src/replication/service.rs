//! The peer `Blobs` service: receiving pushed blobs (verified before they
//! are indexed) and serving blob bytes to peers.

use std::pin::Pin;

use futures_util::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::pb::blobs_server::{Blobs, BlobsServer};
use crate::cluster::pb::{BlobChunk, Empty, FetchRequest};
use crate::oci::Digest;
use crate::storage::{BlobStore, ByteStream, StorageError};

pub struct BlobService {
    blobs: BlobStore,
}

impl BlobService {
    pub fn new(blobs: BlobStore) -> BlobsServer<BlobService> {
        BlobsServer::new(BlobService { blobs })
    }
}

fn digest_of(text: &str) -> Result<Digest, Status> {
    text.parse()
        .map_err(|e: crate::oci::ParseError| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl Blobs for BlobService {
    async fn push(&self, req: Request<Streaming<BlobChunk>>) -> Result<Response<Empty>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty push"))??;
        let digest = digest_of(&first.digest)?;
        if self.blobs.stat(&digest).map_err(internal)?.is_some() {
            return Ok(Response::new(Empty {}));
        }
        let rest = stream.map_ok(|c| c.data).map_err(std::io::Error::other);
        let first_data = first.data;
        let body: ByteStream =
            Box::pin(futures_util::stream::once(async move { Ok(first_data) }).chain(rest));
        match self.blobs.ingest(&digest, body, Some(first.size)).await {
            Ok(blob) if blob.size == first.size => Ok(Response::new(Empty {})),
            Ok(blob) => Err(Status::data_loss(format!(
                "{digest}: announced {} bytes, received {}",
                first.size, blob.size
            ))),
            Err(e @ StorageError::DigestMismatch { .. }) => {
                tracing::warn!(%digest, error = %e, "refused a pushed blob whose bytes do not match");
                Err(Status::data_loss(e.to_string()))
            }
            Err(e) => Err(internal(e)),
        }
    }

    type FetchStream = Pin<Box<dyn Stream<Item = Result<BlobChunk, Status>> + Send>>;

    async fn fetch(
        &self,
        req: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let req = req.into_inner();
        let digest = digest_of(&req.digest)?;
        let blob = self
            .blobs
            .stat(&digest)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("{digest} is not stored here")))?;
        if req.offset > blob.size {
            return Err(Status::out_of_range("offset beyond the blob"));
        }
        let len = req.length.min(blob.size - req.offset);
        let body = self
            .blobs
            .read(&digest, req.offset, len)
            .map_err(internal)?;
        let chunks = body.map(|r| {
            r.map(|data| BlobChunk {
                digest: String::new(),
                size: 0,
                data,
            })
            .map_err(|e| Status::internal(e.to_string()))
        });
        Ok(Response::new(Box::pin(chunks)))
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}
