//! The peer `Blobs` service: receiving pushed blobs (verified before they
//! are indexed) and serving blob bytes to peers.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::pb::blobs_server::{Blobs, BlobsServer};
use crate::cluster::pb::{BlobChunk, Empty, FetchRequest};
use crate::oci::{Algorithm, Digest};
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
        let announced = match first.digest.as_str() {
            "" => None,
            d => Some(digest_of(d)?),
        };
        if let Some(d) = &announced {
            if self.blobs.stat(d).map_err(internal)?.is_some() {
                return Ok(Response::new(Empty {}));
            }
        }
        // A copy streamed while the blob was still arriving at the sender
        // names its digest in a last chunk instead of the first.
        let trailer = Arc::new(Mutex::new(None::<BlobChunk>));
        let seen = trailer.clone();
        let rest = stream.map(move |chunk| match chunk {
            Ok(c) if c.digest.is_empty() => Ok(c.data),
            Ok(c) => {
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                Ok(bytes::Bytes::new())
            }
            Err(s) => Err(std::io::Error::other(s)),
        });
        let first_data = first.data;
        let body: ByteStream =
            Box::pin(futures_util::stream::once(async move { Ok(first_data) }).chain(rest));
        let algorithm = announced
            .as_ref()
            .map_or(Algorithm::Sha256, Digest::algorithm);
        let limit = (first.size > 0).then_some(first.size);
        let named = |_bytes: u64| {
            let trailer = trailer.lock().unwrap_or_else(|p| p.into_inner()).take();
            let last = trailer.map(|t| digest_of(&t.digest)).transpose();
            match (announced.clone(), last) {
                (Some(d), Ok(None)) | (None, Ok(Some(d))) => Ok(d),
                (Some(d), Ok(Some(t))) if d == t => Ok(d),
                (_, Ok(_)) => Err(refused("the push named two digests, or none")),
                (_, Err(e)) => Err(refused(e.message())),
            }
        };
        match self
            .blobs
            .receive(algorithm, body, limit, None, named)
            .await
        {
            Ok(_) => Ok(Response::new(Empty {})),
            Err(e @ StorageError::DigestMismatch { .. }) => {
                tracing::warn!(error = %e, "refused a pushed blob whose bytes do not match");
                Err(Status::data_loss(e.to_string()))
            }
            Err(e @ (StorageError::Body(_) | StorageError::TooLarge { .. })) => {
                Err(Status::aborted(e.to_string()))
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

/// A push that broke the protocol; the copy is discarded.
fn refused(why: &str) -> StorageError {
    StorageError::Body(std::io::Error::other(why.to_string()))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}
