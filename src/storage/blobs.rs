//! Content-addressed blob files and their index in RocksDB.
//!
//! A blob becomes visible only through [`BlobStore::adopt`]: its bytes were
//! verified against the digest and fsynced, then renamed into place and
//! indexed. A crash at any point leaves either no blob or a whole one.

use std::fs::File;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::layout::Layout;
use super::mirror::Mirror;
use super::pins::{Hold, Pins};
use super::scrub::Corrupt;
use super::stream::{self, read_range};
use super::{now_secs, ByteStream, StorageError};
use crate::db::{self, Cf, Db};
use crate::oci::{Algorithm, Digest, Hasher};

/// What this node knows about a blob it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalBlob {
    pub size: u64,
    /// Unix seconds when this node first stored the blob.
    pub first_seen: u64,
}

#[derive(Clone)]
pub struct BlobStore {
    layout: Layout,
    db: Db,
    /// Largest blob this store takes in; `None`, no cap.
    max_size: Option<u64>,
    /// Files the sweeper must leave alone, shared by every clone.
    pins: Pins,
    /// Quarantined copies waiting for a good one, shared by every clone.
    corrupt: std::sync::Arc<Corrupt>,
    /// Whether whole-blob reads are hashed as they are served.
    read_checks: bool,
}

impl BlobStore {
    pub fn new(layout: Layout, db: Db) -> BlobStore {
        BlobStore {
            layout,
            db,
            max_size: None,
            pins: Pins::default(),
            corrupt: Default::default(),
            read_checks: true,
        }
    }

    /// Whether [`BlobStore::read`] hashes whole blobs as it serves them.
    pub fn with_read_checks(self, on: bool) -> BlobStore {
        BlobStore {
            read_checks: on,
            ..self
        }
    }

    /// Caps every blob received through this store, and its clones, at
    /// `max` bytes: client uploads, relayed copies and peers' pushes alike.
    pub fn with_max_size(self, max: u64) -> BlobStore {
        BlobStore {
            max_size: Some(max),
            ..self
        }
    }

    fn max_size(&self) -> Option<u64> {
        self.max_size
    }

    /// Refuses a body declared (`Content-Length`, a chunk's range, a peer's
    /// announced size) to take a blob that holds `held` bytes past the cap.
    /// Callers check before reading any of the body, so an oversized
    /// request is turned away before it is sent (`Expect: 100-continue`).
    pub fn check_declared(&self, held: u64, declared: Option<u64>) -> Result<(), StorageError> {
        match (self.max_size(), declared) {
            (Some(limit), Some(n)) if held.saturating_add(n) > limit => {
                Err(StorageError::TooLarge { limit })
            }
            _ => Ok(()),
        }
    }

    /// Appends `body` to `file`, which holds the first `held` bytes of a
    /// blob, as [`stream::write_body`] does. Stops with
    /// [`StorageError::TooLarge`] once the blob passes the cap, or the body
    /// passes the `most` bytes it may carry.
    pub(super) async fn write_capped(
        &self,
        file: File,
        held: u64,
        most: Option<u64>,
        hasher: Option<&mut Hasher>,
        body: ByteStream,
        mirror: Option<&mut Mirror>,
    ) -> Result<stream::Written, StorageError> {
        let room = self.max_size().map(|max| max.saturating_sub(held));
        let limit = match (most, room) {
            (Some(m), Some(r)) => Some(m.min(r)),
            (m, r) => m.or(r),
        };
        stream::write_body(file, hasher, body, limit, mirror)
            .await
            .map_err(|e| match (e, self.max_size()) {
                // Name the cap, not the room left under it.
                (StorageError::TooLarge { limit }, Some(max)) if Some(limit) == room => {
                    StorageError::TooLarge { limit: max }
                }
                (e, _) => e,
            })
    }

    /// Keeps `digest`'s file from sweeps until the hold is dropped: an
    /// upload holds it until the link that names it is committed.
    pub fn hold(&self, digest: &Digest) -> Hold {
        self.pins.hold(digest)
    }

    /// Whether this node holds the blob, pinning its file for a while when
    /// it does: a peer told "I have it" will name this node as a holder.
    pub fn claim(&self, digest: &Digest) -> Result<bool, StorageError> {
        let mut pins = self.pins.lock();
        let held = self.stat(digest)?.is_some();
        if held {
            pins.arrived(digest);
        }
        Ok(held)
    }

    /// Quarantined copies waiting for a good one.
    pub fn corrupt(&self) -> &Corrupt {
        &self.corrupt
    }

    pub(super) fn pins(&self) -> &Pins {
        &self.pins
    }

    pub(super) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(super) fn db(&self) -> &Db {
        &self.db
    }

    pub fn stat(&self, digest: &Digest) -> Result<Option<LocalBlob>, StorageError> {
        let raw = self.db.get(Cf::LocalBlobs, digest.as_str().as_bytes())?;
        Ok(raw
            .map(|v| db::decode::<LocalBlob>(Cf::LocalBlobs.name(), &v))
            .transpose()?)
    }

    /// Opens the file of a blob this node holds.
    pub fn open(&self, digest: &Digest) -> Result<File, StorageError> {
        Ok(File::open(self.layout.blob(digest))?)
    }

    /// Streams `len` bytes from `offset` of a blob this node holds. With
    /// read checks on, a whole blob is hashed as it is read: a copy that
    /// fails its digest ends in an error before its last bytes, so no
    /// client receives it whole, and is quarantined.
    pub fn read(&self, digest: &Digest, offset: u64, len: u64) -> Result<ByteStream, StorageError> {
        let file = File::open(self.layout.blob(digest))?;
        if !self.read_checks || offset > 0 || len != file.metadata()?.len() {
            return Ok(read_range(file, offset, len));
        }
        let (store, bad) = (self.clone(), digest.clone());
        Ok(stream::read_verified(
            file,
            len,
            digest.clone(),
            move || {
                if let Err(e) = store.quarantine(&bad) {
                    tracing::warn!(digest = %bad, error = %e, "could not quarantine a bad blob copy");
                }
            },
        ))
    }

    /// Receives a whole blob whose digest is known in advance, handing its
    /// bytes to `mirror` as they arrive. `declared` is the body's announced
    /// length, which it may not exceed.
    pub async fn ingest(
        &self,
        expected: &Digest,
        body: ByteStream,
        declared: Option<u64>,
        mirror: Option<&mut Mirror>,
    ) -> Result<LocalBlob, StorageError> {
        self.receive(expected.algorithm(), body, declared, mirror, |_| {
            Ok(expected.clone())
        })
        .await
    }

    /// Receives a whole blob hashed with `algorithm`, whose digest `name`
    /// gives once the body has ended (with the byte count). The blob is
    /// indexed only if the bytes match that digest. A body past the cap, or
    /// past its `declared` length, is refused and nothing of it kept.
    pub async fn receive(
        &self,
        algorithm: Algorithm,
        body: ByteStream,
        declared: Option<u64>,
        mut mirror: Option<&mut Mirror>,
        name: impl FnOnce(u64) -> Result<Digest, StorageError>,
    ) -> Result<LocalBlob, StorageError> {
        self.check_declared(0, declared)?;
        let tmp = self.layout.tmp_file();
        let result = async {
            let mut hasher = algorithm.hasher();
            let written = self
                .write_capped(
                    File::create(&tmp)?,
                    0,
                    declared,
                    Some(&mut hasher),
                    body,
                    mirror.as_deref_mut(),
                )
                .await?;
            let expected = name(written.bytes)?;
            verify(&expected, hasher.finish())?;
            if let Some(m) = mirror {
                // Replicas fsync while this node does.
                m.end(&expected, written.bytes).await;
            }
            let file = written.file;
            tokio::task::spawn_blocking(move || file.sync_all())
                .await
                .map_err(io::Error::other)??;
            self.adopt(&tmp, &expected, written.bytes).await
        }
        .await;
        if result.is_err() {
            if let Err(e) = std::fs::remove_file(&tmp) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %tmp.display(), error = %e, "could not remove a refused blob's file");
                }
            }
        }
        result
    }

    /// Moves a verified, fsynced file into place and indexes it.
    pub async fn adopt(
        &self,
        from: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<LocalBlob, StorageError> {
        // Pinned before it appears: a sweep of an older copy either ends
        // before this or finds the pin.
        self.pins.lock().arrived(digest);
        let target = self.layout.blob(digest);
        let from = from.to_owned();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let dir = target.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&from, &target)?;
            // The rename is durable only once the directory entry is.
            File::open(dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)??;
        let blob = match self.stat(digest)? {
            Some(existing) => existing,
            None => {
                let blob = LocalBlob {
                    size,
                    first_seen: now_secs(),
                };
                let mut batch = rocksdb::WriteBatch::default();
                batch.put_cf(
                    self.db.cf(Cf::LocalBlobs),
                    digest.as_str(),
                    db::encode(&blob),
                );
                self.db.write_durable(batch)?;
                blob
            }
        };
        Ok(blob)
    }
}

pub(crate) fn verify(expected: &Digest, actual: Digest) -> Result<(), StorageError> {
    if &actual == expected {
        Ok(())
    } else {
        Err(StorageError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{files, watched};
    use bytes::Bytes;
    use futures_util::StreamExt;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use crate::storage::testing::store;

    fn body(data: &'static [u8]) -> ByteStream {
        Box::pin(futures_util::stream::once(async move {
            Ok(Bytes::from_static(data))
        }))
    }

    #[tokio::test]
    async fn ingest_verifies_before_indexing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let good = Digest::sha256(b"hello");
        let bad = Digest::sha256(b"other");
        assert!(matches!(
            s.ingest(&bad, body(b"hello"), None, None).await,
            Err(StorageError::DigestMismatch { .. })
        ));
        assert!(s.stat(&bad).unwrap().is_none());
        assert!(!Layout::new(dir.path()).blob(&bad).exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

        let blob = s.ingest(&good, body(b"hello"), None, None).await.unwrap();
        assert_eq!(blob.size, 5);
        assert_eq!(s.stat(&good).unwrap(), Some(blob));
        let mut r = s.read(&good, 1, 3).unwrap();
        assert_eq!(r.next().await.unwrap().unwrap(), Bytes::from_static(b"ell"));
    }

    #[tokio::test]
    async fn a_bad_copy_is_never_read_whole_unless_read_checks_are_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let digest = Digest::sha256(b"hello");
        s.ingest(&digest, body(b"hello"), None, None).await.unwrap();
        std::fs::write(Layout::new(dir.path()).blob(&digest), b"jello").unwrap();
        let read_all = |s: &BlobStore| {
            let mut r = s.read(&digest, 0, 5).unwrap();
            async move {
                let mut out = Vec::new();
                while let Some(chunk) = r.next().await {
                    out.extend_from_slice(&chunk?);
                }
                Ok::<_, std::io::Error>(out)
            }
        };
        let unchecked = s.clone().with_read_checks(false);
        assert_eq!(read_all(&unchecked).await.unwrap(), b"jello");
        assert!(read_all(&s).await.is_err(), "a bad copy was read whole");
        assert!(
            s.stat(&digest).unwrap().is_none(),
            "the bad copy is still indexed"
        );
    }

    #[tokio::test]
    async fn the_cap_holds_for_every_clone_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let relay = store(dir.path()).with_max_size(4).clone();
        let digest = Digest::sha256(b"hello");
        assert!(matches!(
            relay.ingest(&digest, body(b"hello"), None, None).await,
            Err(StorageError::TooLarge { limit: 4 })
        ));
        // A declared length past the cap is refused before the body is read.
        let read = Arc::default();
        assert!(matches!(
            relay
                .ingest(&digest, watched(Arc::clone(&read)), Some(5), None)
                .await,
            Err(StorageError::TooLarge { limit: 4 })
        ));
        assert!(!read.load(Ordering::SeqCst), "the body was read");
        assert!(relay.stat(&digest).unwrap().is_none());
        assert!(files(dir.path(), "blobs").is_empty());
        assert!(files(dir.path(), "tmp").is_empty());
        let small = Digest::sha256(b"hi");
        assert_eq!(
            relay
                .ingest(&small, body(b"hi"), Some(2), None)
                .await
                .unwrap()
                .size,
            2
        );
    }
}
