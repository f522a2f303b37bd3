//! The peer `Blobs` service: receiving pushed blobs (verified before they
//! are indexed) and serving blob bytes to peers.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::Flights;
use crate::cluster::pb::blobs_server::{Blobs, BlobsServer};
use crate::cluster::pb::{BlobChunk, Empty, FetchRequest, OfferReply, OfferRequest};
use crate::metrics::Metrics;
use crate::oci::{Algorithm, Digest};
use crate::storage::{BlobStore, ByteStream, StorageError};

pub struct BlobService {
    blobs: BlobStore,
    /// What this node is receiving, which peers may fetch while it arrives.
    flights: Flights,
    metrics: Arc<Metrics>,
    /// Fetch streams being served now.
    sending: Arc<AtomicU32>,
}

impl BlobService {
    pub fn new(
        blobs: BlobStore,
        flights: Flights,
        metrics: Arc<Metrics>,
    ) -> BlobsServer<BlobService> {
        BlobsServer::new(BlobService {
            blobs,
            flights,
            metrics,
            sending: Arc::default(),
        })
    }
}

/// Counts a fetch stream as being served until it is dropped.
struct Sending(Arc<AtomicU32>);

impl Sending {
    fn start(count: &Arc<AtomicU32>) -> Sending {
        count.fetch_add(1, Ordering::Relaxed);
        Sending(count.clone())
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn digest_of(text: &str) -> Result<Digest, Status> {
    text.parse()
        .map_err(|e: crate::oci::ParseError| Status::invalid_argument(e.to_string()))
}

impl BlobService {
    /// Receives one pushed blob: a first chunk that may announce its digest
    /// and size, then its bytes, then (for a copy streamed while the blob
    /// arrived at the sender) a last chunk naming the digest.
    async fn receive_push(
        &self,
        mut stream: impl Stream<Item = Result<BlobChunk, Status>> + Send + Unpin + 'static,
    ) -> Result<(), Status> {
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty push"))??;
        let announced = match first.digest.as_str() {
            "" => None,
            d => Some(digest_of(d)?),
        };
        if let Some(d) = &announced {
            if self.blobs.claim(d).map_err(internal)? {
                return Ok(());
            }
        }
        // An announced size past the cap is refused before the bytes are read.
        let declared = (first.size > 0).then_some(first.size);
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
        self.blobs
            .receive(algorithm, body, declared, None, named)
            .await
            .map(|_| ())
            .map_err(refusal)
    }
}

#[tonic::async_trait]
impl Blobs for BlobService {
    async fn push(&self, req: Request<Streaming<BlobChunk>>) -> Result<Response<Empty>, Status> {
        self.receive_push(req.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    type FetchStream = Pin<Box<dyn Stream<Item = Result<BlobChunk, Status>> + Send>>;

    async fn fetch(
        &self,
        req: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let req = req.into_inner();
        let digest = digest_of(&req.digest)?;
        let (size, from) = match self.blobs.stat(&digest).map_err(internal)? {
            Some(blob) => (blob.size, Source::Store),
            None => match self.flights.offer(&digest) {
                Some((follow, _)) => (follow.size(), Source::Flight(follow)),
                None => return Err(Status::not_found(format!("{digest} is not stored here"))),
            },
        };
        if req.offset > size {
            return Err(Status::out_of_range("offset beyond the blob"));
        }
        let end = req.offset + req.length.min(size - req.offset);
        let (body, label) = match from {
            Source::Store => (
                self.blobs
                    .read(&digest, req.offset, end - req.offset)
                    .map_err(internal)?,
                "store",
            ),
            Source::Flight(follow) => (follow.read(req.offset, end), "flight"),
        };
        let metrics = self.metrics.clone();
        let sending = Sending::start(&self.sending);
        let chunks = body.map(move |r| {
            let _serving = &sending;
            r.map(|data| {
                metrics.fetch_sent(label, data.len() as u64);
                BlobChunk {
                    digest: String::new(),
                    size: 0,
                    data,
                }
            })
            .map_err(|e| Status::internal(e.to_string()))
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn offer(&self, req: Request<OfferRequest>) -> Result<Response<OfferReply>, Status> {
        let digest = digest_of(&req.into_inner().digest)?;
        let held = self.blobs.stat(&digest).map_err(internal)?.is_some();
        let flight = (!held).then(|| self.flights.offer(&digest)).flatten();
        Ok(Response::new(OfferReply {
            held,
            receiving: flight.is_some(),
            depth: flight.map_or(0, |(_, depth)| depth),
            sending: self.sending.load(Ordering::Relaxed),
        }))
    }
}

/// Where a fetch's bytes come from.
enum Source {
    Store,
    /// A blob this node is still receiving.
    Flight(crate::storage::Follow),
}

/// Why a pushed copy was not kept, as the sender sees it.
fn refusal(e: StorageError) -> Status {
    match e {
        StorageError::DigestMismatch { .. } => {
            tracing::warn!(error = %e, "refused a pushed blob whose bytes do not match");
            Status::data_loss(e.to_string())
        }
        StorageError::TooLarge { .. } => {
            tracing::warn!(error = %e, "refused a pushed blob past the size cap");
            Status::resource_exhausted(e.to_string())
        }
        StorageError::Body(_) => Status::aborted(e.to_string()),
        e => internal(e),
    }
}

/// A push that broke the protocol; the copy is discarded.
fn refused(why: &str) -> StorageError {
    StorageError::Body(std::io::Error::other(why.to_string()))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use bytes::Bytes;

    use super::*;
    use crate::db::Db;
    use crate::storage::testing::files;
    use crate::storage::Layout;

    fn chunk(digest: &str, size: u64, data: &[u8]) -> Result<BlobChunk, Status> {
        Ok(BlobChunk {
            digest: digest.into(),
            size,
            data: Bytes::copy_from_slice(data),
        })
    }

    #[tokio::test]
    async fn pushes_past_the_cap_are_refused_and_nothing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let blobs =
            BlobStore::new(layout.clone(), Db::open(&layout.db()).unwrap()).with_max_size(10);
        let service = BlobService {
            blobs,
            flights: Flights::default(),
            metrics: Arc::default(),
            sending: Arc::default(),
        };
        let data = [7u8; 20];
        let digest = Digest::sha256(&data).to_string();

        // An announced size past the cap: refused before the bytes are read.
        let read = Arc::new(AtomicBool::new(false));
        let seen = read.clone();
        let bytes = futures_util::stream::poll_fn(move |_| {
            seen.store(true, Ordering::SeqCst);
            std::task::Poll::Ready(Some(chunk("", 0, &[7; 10])))
        });
        let push = futures_util::stream::iter([chunk(&digest, 20, b"")]).chain(bytes);
        let e = service.receive_push(Box::pin(push)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        assert!(!read.load(Ordering::SeqCst), "the bytes were read");

        // A copy streamed while the blob arrived names nothing up front: it
        // is cut off at the cap.
        let push = futures_util::stream::iter([
            chunk("", 0, b""),
            chunk("", 0, &data[..12]),
            chunk("", 0, &data[12..]),
            chunk(&digest, 20, b""),
        ]);
        let e = service.receive_push(Box::pin(push)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        assert!(files(dir.path(), "blobs").is_empty());
        assert!(files(dir.path(), "tmp").is_empty());

        let small = Digest::sha256(b"small").to_string();
        let push = futures_util::stream::iter([chunk(&small, 5, b"small")]);
        service.receive_push(Box::pin(push)).await.unwrap();
    }
}
