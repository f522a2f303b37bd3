//! This node's bytes: content-addressed blob files with their RocksDB index,
//! and resumable upload sessions.

pub mod blobs;
pub mod format;
pub mod hashing;
pub mod identity;
pub mod layout;
pub mod mirror;
pub mod pins;
pub mod scrub;
pub mod spool;
pub mod stream;
pub mod sweep;
pub mod uploads;

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use crate::db::DbError;
use crate::oci::Digest;

pub use blobs::{BlobStore, LocalBlob};
pub use layout::Layout;
pub use mirror::{Mirror, MirrorSink, Mirrored};
pub use pins::Hold;
pub use spool::{Follow, Spool};
pub use sweep::{Removal, Swept};
pub use uploads::{UploadId, Uploads};

/// A body of bytes moving through berth: a client upload, a blob being served.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What a request says about the chunk of an upload it carries, known
/// before any of the body is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    /// The chunk's first and last byte (`Content-Range`): it must start
    /// where the upload ends, and carry exactly that many bytes.
    pub range: Option<(u64, u64)>,
    /// The body's length (`Content-Length`).
    pub length: Option<u64>,
}

impl Declared {
    /// How many bytes the body says it carries.
    pub fn bytes(&self) -> Option<u64> {
        match self.range {
            Some((first, last)) => last.checked_sub(first)?.checked_add(1),
            None => self.length,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the request body failed before it was complete: {0}")]
    Body(io::Error),
    #[error("content does not match digest {expected} (it hashes to {actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upload session unknown")]
    UploadUnknown,
    #[error("chunk starts at byte {start} but the upload holds {offset} bytes")]
    OutOfOrder { offset: u64, start: u64 },
    #[error("chunk declared {declared} bytes but carried {actual}")]
    ChunkLength { declared: u64, actual: u64 },
    #[error("blob exceeds the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
}

pub fn now_secs() -> u64 {
    now_millis() / 1000
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;

    use super::ByteStream;

    /// Every file under `<root>/<dir>`, at any depth.
    pub(crate) fn files(root: &Path, dir: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![root.join(dir)];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    todo.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        out
    }

    /// A blob store in a fresh data directory under `dir`.
    pub(crate) fn store(dir: &Path) -> super::BlobStore {
        let layout = super::Layout::new(dir);
        layout.create().unwrap();
        super::BlobStore::new(layout.clone(), crate::db::Db::open(&layout.db()).unwrap())
    }

    /// Stores `data` as a blob of `s`; its digest.
    pub(crate) async fn put(s: &super::BlobStore, data: &'static [u8]) -> crate::oci::Digest {
        let digest = crate::oci::Digest::sha256(data);
        let body: ByteStream = Box::pin(futures_util::stream::once(async move {
            Ok(Bytes::from_static(data))
        }));
        s.ingest(&digest, body, None, None).await.unwrap();
        digest
    }

    /// An endless body that notes whether anyone read it.
    pub(crate) fn watched(read: Arc<AtomicBool>) -> ByteStream {
        Box::pin(futures_util::stream::poll_fn(move |_| {
            read.store(true, Ordering::SeqCst);
            std::task::Poll::Ready(Some(Ok(Bytes::from_static(&[7; 1000]))))
        }))
    }
}
