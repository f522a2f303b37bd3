//! This node's bytes: content-addressed blob files with their RocksDB index,
//! and resumable upload sessions.

pub mod blobs;
pub mod identity;
pub mod layout;
pub mod mirror;
pub mod stream;
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
pub use uploads::{UploadId, Uploads};

/// A body of bytes moving through berth: a client upload, a blob being served.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

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
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
